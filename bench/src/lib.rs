//! Benchmark support for kdp: a seeded generator of realistic Kalshi frames ([`frames`]), the
//! serde_json and sonic-rs parsers kdp's tape parser is compared with, naive and tuned
//! ([`baseline`]), and the
//! partial pipelines that show where parse time goes ([`stages`]), and what the load harnesses
//! in `src/bin/` share ([`harness`]: CPU accounting, quantiles, formatting, `/metrics` scrape).
//!
//! The criterion benches in `benches/` time these; the tests here check, before anything is
//! timed, that every parser turns every generated frame into exactly the event it was built from.

pub mod baseline;
pub mod check;
pub mod frames;
pub mod harness;
pub mod stages;

#[cfg(test)]
mod tests {
    use kdp_engine::event::{BookDelta, Event, Side};
    use kdp_ingest::wire::{Envelope, Frame, FrameParser, Message};

    use crate::baseline::naive::{SerdeJsonNaiveParser, SonicNaiveParser};
    use crate::baseline::{SerdeJsonTunedParser, SonicTunedParser};
    use crate::check::parsers_agree;
    use crate::frames::{DELTAS, FrameSet, SEED, SNAPSHOTS, Spec, TICKERS, TRADES};

    #[test]
    fn every_parser_reads_every_generated_frame_exactly() {
        let set = FrameSet::generate(SEED);
        assert_eq!(parsers_agree(&set), Ok(DELTAS + TRADES + TICKERS + SNAPSHOTS));
    }

    #[test]
    fn another_seed_also_agrees() {
        let set = FrameSet::generate(7);
        assert_eq!(parsers_agree(&set), Ok(DELTAS + TRADES + TICKERS + SNAPSHOTS));
    }

    #[test]
    fn generation_is_deterministic_and_realistic() {
        let a = FrameSet::generate(SEED);
        let b = FrameSet::generate(SEED);
        assert!(a.all().zip(b.all()).all(|((_, x), (_, y))| x.frame == y.frame));
        assert_ne!(FrameSet::generate(SEED + 1).deltas[0].frame, a.deltas[0].frame);
        let tickers: std::collections::HashSet<_> = a.markets.iter().map(|m| &m.ticker).collect();
        assert_eq!(tickers.len(), a.markets.len());
        for g in &a.deltas {
            // The protocol note's example delta is 265 bytes.
            assert!((200..=300).contains(&g.frame.len()), "delta of {} bytes", g.frame.len());
            assert!(g.frame.windows(11).any(|w| w == b"\"market_id\""));
        }
        for g in &a.snapshots {
            let Spec::Snapshot { yes, no, .. } = &g.spec else { panic!("not a snapshot") };
            assert!((10..=40).contains(&(yes.len() + no.len())));
            assert!(yes.windows(2).all(|w| w[0].price_micros < w[1].price_micros));
            assert!(no.windows(2).all(|w| w[0].price_micros < w[1].price_micros));
        }
    }

    /// The protocol note's delta, checked field by field, so the baselines are pinned to a
    /// truth written by hand and not only to the generator.
    #[test]
    fn protocol_example_delta() {
        let frame = br#"{"type":"orderbook_delta","sid":2,"seq":501,"msg":{"market_ticker":"KXBTCD-26SEP2517-T114999.99","market_id":"9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1","price_dollars":"0.4200","delta_fp":"-30.00","side":"yes","ts":"2026-09-25T19:16:20.921884Z","ts_ms":1790363780921}}"#;
        let expected = Frame {
            envelope: Envelope { sid: Some(2), seq: Some(501), ..Envelope::default() },
            message: Message::Event(Event::Delta(BookDelta {
                market: "KXBTCD-26SEP2517-T114999.99",
                side: Side::Yes,
                price_micros: 420_000,
                delta_centi: -3_000,
                ts_exch_ns: 1_790_363_780_921_884_000,
                client_order_id: None,
            })),
        };
        assert_eq!(FrameParser::new().parse(frame), Ok(expected.clone()));
        assert_eq!(SerdeJsonNaiveParser::default().parse(frame), Ok(expected.clone()));
        assert_eq!(SonicNaiveParser::default().parse(frame), Ok(expected.clone()));
        assert_eq!(SerdeJsonTunedParser::default().parse(frame), Ok(expected.clone()));
        assert_eq!(SonicTunedParser::default().parse(frame), Ok(expected));
    }

    /// A delta at $1 is outside the book: every parser refuses it.
    #[test]
    fn every_parser_refuses_a_price_outside_the_book() {
        let frame = br#"{"type":"orderbook_delta","sid":2,"seq":1,"msg":{"market_ticker":"A","price_dollars":"1.0000","delta_fp":"1.00","side":"no","ts_ms":1}}"#;
        assert!(FrameParser::new().parse(frame).is_err());
        assert!(SerdeJsonNaiveParser::default().parse(frame).is_err());
        assert!(SonicNaiveParser::default().parse(frame).is_err());
        assert!(SerdeJsonTunedParser::default().parse(frame).is_err());
        assert!(SonicTunedParser::default().parse(frame).is_err());
    }
}

//! Occurrence ordinals (`occ`, DESIGN §4), computed per gatherer per market from that
//! gatherer's stream order.
//!
//! **Deltas.** Identical (time, side, price, change) tuples of one market are numbered 0, 1, 2,
//! ... in the order the gatherer received them. Kalshi sends one market's deltas in exchange
//! order, so the state is the tuples seen at the market's latest exchange time and resets when
//! the time advances. Every gatherer that received the same occurrences numbers them alike; one
//! that missed some numbers fewer, and the union over gatherers keeps each (tuple, occ) once:
//! the maximum multiplicity. A time that goes *backwards* within a market breaks the exchange's
//! ordering promise: it is counted (`order_violations`) and numbered within the current state
//! (so after a reset it may restart at 0; the count makes that visible).
//!
//! **Tickers.** The ticker channel has no `seq`, so a gatherer cannot drop a duplicated frame
//! (the simulator's `dup` fault, and any real retransmission) and stores it twice, back to back.
//! Numbering tickers like deltas would turn that copy into occurrence 1 and put a ticker into
//! production that the exchange sent once. Kalshi sends a ticker when a field changes, so the
//! same market never genuinely reports the same (time, content) twice *in a row*: a ticker equal
//! to the market's previous ticker in this gatherer's stream is a **repeat** and is dropped here.
//! A state that genuinely recurs at one exchange time after a different one (A, B, A) is a real
//! second report and gets occ 1. The cost: a gatherer that missed B sees A, A and keeps one A;
//! another gatherer that saw all three supplies the second A (max multiplicity, as for deltas).

use kdp_engine::event::Side;

use crate::row::TickerContent;

/// A ticker's ordinal, or that it repeats the market's previous ticker in this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TickerOcc {
    /// A new report: its ordinal among identical (time, content) reports.
    Occ(u32),
    /// The same (time, content) as this market's previous ticker here: a duplicated frame.
    Repeat,
}

/// One market's counting state in one gatherer's stream.
#[derive(Debug, Default)]
struct MarketOcc {
    /// Exchange time the delta tuples below belong to (`i64::MIN`: none yet).
    delta_ts_ns: i64,
    /// (time, side, price, change) → occurrences so far at `delta_ts_ns`.
    deltas: Vec<(i64, Side, u32, i64, u32)>,
    /// Exchange time the ticker contents below belong to.
    ticker_ts_ns: i64,
    /// (time, content) → occurrences so far at `ticker_ts_ns`.
    tickers: Vec<(i64, TickerContent, u32)>,
    /// The market's previous ticker in this stream: (time, content).
    last_ticker: Option<(i64, TickerContent)>,
}

impl MarketOcc {
    fn new() -> Self {
        MarketOcc { delta_ts_ns: i64::MIN, ticker_ts_ns: i64::MIN, ..MarketOcc::default() }
    }
}

/// The occurrence state of one gatherer's stream: one small entry per market id.
#[derive(Debug, Default)]
pub(crate) struct OccCounter {
    markets: Vec<MarketOcc>,
    /// Rows whose exchange time went backwards within their market.
    pub(crate) order_violations: u64,
}

impl OccCounter {
    fn market(&mut self, market: u32) -> &mut MarketOcc {
        let i = market as usize;
        if i >= self.markets.len() {
            self.markets.resize_with(i + 1, MarketOcc::new);
        }
        &mut self.markets[i]
    }

    /// The ordinal of this delta among identical ones of its market at its time.
    pub(crate) fn delta(
        &mut self,
        market: u32,
        ts_exch_ns: i64,
        side: Side,
        price_micros: u32,
        delta_centi: i64,
    ) -> u32 {
        let m = self.market(market);
        let violation = ts_exch_ns < m.delta_ts_ns;
        if ts_exch_ns > m.delta_ts_ns {
            m.delta_ts_ns = ts_exch_ns;
            m.deltas.clear();
        }
        let occ = match m.deltas.iter_mut().find(|(t, s, p, d, _)| {
            *t == ts_exch_ns && *s == side && *p == price_micros && *d == delta_centi
        }) {
            Some(entry) => {
                entry.4 += 1;
                entry.4 - 1
            }
            None => {
                m.deltas.push((ts_exch_ns, side, price_micros, delta_centi, 1));
                0
            }
        };
        self.order_violations += u64::from(violation);
        occ
    }

    /// The ordinal of this ticker, or [`TickerOcc::Repeat`] (see the module note).
    pub(crate) fn ticker(
        &mut self,
        market: u32,
        ts_exch_ns: i64,
        content: &TickerContent,
    ) -> TickerOcc {
        let m = self.market(market);
        if m.last_ticker.as_ref().is_some_and(|(t, c)| *t == ts_exch_ns && c == content) {
            return TickerOcc::Repeat;
        }
        m.last_ticker = Some((ts_exch_ns, *content));
        let violation = ts_exch_ns < m.ticker_ts_ns;
        if ts_exch_ns > m.ticker_ts_ns {
            m.ticker_ts_ns = ts_exch_ns;
            m.tickers.clear();
        }
        let occ = match m.tickers.iter_mut().find(|(t, c, _)| *t == ts_exch_ns && c == content) {
            Some(entry) => {
                entry.2 += 1;
                entry.2 - 1
            }
            None => {
                m.tickers.push((ts_exch_ns, *content, 1));
                0
            }
        };
        self.order_violations += u64::from(violation);
        TickerOcc::Occ(occ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_deltas_are_numbered_and_reset_when_time_advances() {
        let mut c = OccCounter::default();
        assert_eq!(c.delta(0, 10, Side::Yes, 500_000, 100), 0);
        assert_eq!(c.delta(0, 10, Side::Yes, 500_000, 100), 1);
        assert_eq!(c.delta(0, 10, Side::No, 500_000, 100), 0);
        assert_eq!(c.delta(1, 10, Side::Yes, 500_000, 100), 0, "other market");
        assert_eq!(c.delta(0, 10, Side::Yes, 500_000, 100), 2);
        assert_eq!(c.delta(0, 11, Side::Yes, 500_000, 100), 0, "time advanced");
        assert_eq!(c.order_violations, 0);
        assert_eq!(c.delta(0, 10, Side::Yes, 500_000, 100), 0, "backwards: state was reset");
        assert_eq!(c.order_violations, 1);
    }

    #[test]
    fn a_ticker_equal_to_the_previous_one_is_a_repeat_but_a_recurrence_is_counted() {
        let a = TickerContent { yes_bid_micros: Some(1), ..TickerContent::default() };
        let b = TickerContent { yes_bid_micros: Some(2), ..TickerContent::default() };
        let mut c = OccCounter::default();
        assert_eq!(c.ticker(0, 5, &a), TickerOcc::Occ(0));
        assert_eq!(c.ticker(0, 5, &a), TickerOcc::Repeat);
        assert_eq!(c.ticker(1, 5, &a), TickerOcc::Occ(0), "other market");
        assert_eq!(c.ticker(0, 5, &b), TickerOcc::Occ(0));
        assert_eq!(c.ticker(0, 5, &a), TickerOcc::Occ(1));
        assert_eq!(c.ticker(0, 5, &a), TickerOcc::Repeat);
        assert_eq!(c.ticker(0, 6, &a), TickerOcc::Occ(0), "time advanced");
    }
}

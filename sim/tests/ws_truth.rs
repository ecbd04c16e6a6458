//! The ground truth the simulator writes while serving WebSocket clients: every exchange event,
//! and per connection a delivery log that says exactly which events the client got, which the
//! transport withheld (drop faults) and which it sent twice (duplicate faults). Checked against
//! what a client built on kdp's own parser actually received.

#![allow(clippy::unwrap_used)]

mod ws_support;

use std::collections::BTreeSet;

use kdp_ingest::wire::{Channel, Command, MarketFilter};
use kdp_sim::market::model::ExchEventKind;
use kdp_sim::market::truth::{DeliveryItem, TruthReader, TruthRecord};
use ws_support::{Kind, client, fault, start};

#[tokio::test]
async fn delivery_log_matches_what_the_client_received() {
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.bin");
    let path = truth_path.clone();
    let sim = start(41, move |cfg| cfg.truth_path = Some(path)).await;
    let mut c = client(&sim).await;
    c.send(&Command::Subscribe {
        id: 1,
        channels: &[Channel::Trade],
        markets: MarketFilter::All,
        send_initial_snapshot: false,
        skip_ticker_ack: false,
    })
    .await;
    c.frame().await;
    fault(&sim.handle, "/faults/drop_next", r#"{"conn":1,"frames":3}"#).await;
    sim.handle.hub().advance(2_000).await.unwrap();
    let first = c.barrier().await;
    fault(&sim.handle, "/faults/dup_next", r#"{"conn":1,"frames":2}"#).await;
    sim.handle.hub().advance(2_000).await.unwrap();
    let second = c.barrier().await;
    let received = first.iter().chain(&second).filter(|f| matches!(f.kind, Kind::Trade { .. }));
    let received_ids: Vec<String> = received
        .map(|f| match &f.kind {
            Kind::Trade { trade_id, .. } => trade_id.clone(),
            _ => unreachable!(),
        })
        .collect();
    sim.handle.shutdown().await;

    let reader =
        TruthReader::new(std::io::BufReader::new(std::fs::File::open(&truth_path).unwrap()))
            .unwrap();
    let mut trade_seqs = Vec::new();
    let mut trade_ids = std::collections::HashMap::new();
    let mut items = Vec::new();
    for record in reader {
        match record.unwrap() {
            TruthRecord::Exch(ev) => {
                if let ExchEventKind::Trade { trade_id, .. } = ev.event.kind {
                    trade_seqs.push(ev.event.exch_seq);
                    trade_ids
                        .insert(ev.event.exch_seq, kdp_sim::market::truth::uuid_text(&trade_id));
                }
            }
            TruthRecord::Delivery(log) => {
                assert_eq!(log.conn_id, 1);
                items.extend(log.items);
            }
            _ => {}
        }
    }
    // The log: three gaps, then deliveries, two of them followed by their duplicate.
    let gaps: Vec<u64> = items
        .iter()
        .filter_map(|i| match *i {
            DeliveryItem::Gap { first, last } => {
                assert_eq!(first, last);
                Some(first)
            }
            _ => None,
        })
        .collect();
    assert_eq!(gaps, trade_seqs[..3], "the three dropped trades are logged as gaps");
    let dups: Vec<u64> = items
        .iter()
        .filter_map(|i| if let DeliveryItem::Duplicate(s) = *i { Some(s) } else { None })
        .collect();
    assert_eq!(dups.len(), 2);
    // What the log says was delivered (duplicates included) is exactly what the client got.
    let logged: Vec<String> = items
        .iter()
        .filter_map(|i| match *i {
            DeliveryItem::Delivered(s) | DeliveryItem::Duplicate(s) => Some(trade_ids[&s].clone()),
            DeliveryItem::Gap { .. } => None,
        })
        .collect();
    assert_eq!(logged, received_ids);
    // Every trade the exchange made is accounted for: delivered or withheld.
    let covered: BTreeSet<u64> = items
        .iter()
        .map(|i| match *i {
            DeliveryItem::Delivered(s) | DeliveryItem::Duplicate(s) => s,
            DeliveryItem::Gap { first, .. } => first,
        })
        .collect();
    assert_eq!(covered, trade_seqs.iter().copied().collect::<BTreeSet<u64>>());
}

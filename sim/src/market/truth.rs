//! The ground truth: a compact binary log of everything the simulated exchange sent (every
//! [`ExchEvent`] with the catalog needed to name it) and of what each connection was delivered,
//! which `kdp verify` compares production against. Written by [`TruthWriter`], read back by
//! [`TruthReader`], rendered for PostgreSQL by [`to_copy_text`] and [`delivery_copy_text`].
//!
//! # Byte layout (version 1)
//! Integers are little-endian; `varint` is unsigned LEB128 (at most 10 bytes); `zz` is a zigzag
//! varint for signed values (`(v << 1) ^ (v >> 63)`); `str` is a varint byte length then UTF-8.
//!
//! Header, 40 bytes:
//! ```text
//! 0   8  magic "KDPTRUTH"
//! 8   2  version (u16) = 1
//! 10  2  flags (u16): bit 0 = legacy whole-second exchange times
//! 12  4  reserved, 0
//! 16  8  seed (u64)
//! 24  8  config digest (u64, MarketConfig::digest)
//! 32  8  start time, ns (i64)
//! ```
//! Then records, each `tag (u8) | payload length (varint) | payload`:
//! ```text
//! 0x01 series    id varint, ticker str, title str, category str, frequency str
//! 0x02 event     id varint, ticker str, series varint, title str, sub_title str, mutually_exclusive u8
//! 0x03 market    id varint, ticker str, event varint, grid u8 (0 linear_cent, 1 deci_cent,
//!                2 tapered_deci_cent), fractional u8, status u8 (0 initialized, 1 active,
//!                2 inactive, 3 closed, 4 determined, 5 finalized; as of writing),
//!                created zz, open zz, close zz (ns), yes_sub_title str
//! 0x10 delta     dseq varint, dts zz, market varint, side u8 (0 yes, 1 no), price varint, delta zz
//! 0x11 trade     dseq, dts, market, trade_id 16 bytes, yes_price varint, count zz,
//!                flags u8 (bit 0 taker bought NO, bit 1 taker hit the bid)
//! 0x12 ticker    dseq, dts, market, flags u8 (bit 0 last price present, bit 1 last size present),
//!                [last_price varint], yes_bid varint, yes_ask varint, yes_bid_size zz,
//!                yes_ask_size zz, [last_size zz], volume zz, open_interest zz,
//!                dollar_volume zz, dollar_open_interest zz
//! 0x13 lifecycle dseq, dts, market, kind u8 (0 created, 1 activated, 2 deactivated,
//!                3 close_date_updated, 4 determined, 5 settled), flags u8 (bit 0 determined ts,
//!                bit 1 settled ts, bit 2 result, bit 3 result is yes, bit 4 settlement value,
//!                bit 5 is_deactivated), open zz, close zz, [determined zz], [settled zz],
//!                [settlement value varint]
//! 0x14 event_created  dseq, dts, event varint
//! 0x20 delivery  connection id varint, item count varint, items; an item is a varint
//!                `zz(seq − prev) << 2 | kind` (kind 0 delivered, 1 delivered again (duplicate),
//!                2 gap: the transport withheld seqs `seq..=seq+n`, followed by n varint);
//!                `prev` starts at 0 in each record and becomes the item's last seq; a jump
//!                too large for the tag (`zz ≥ 2^62`) is written as varint 3, the absolute seq
//!                (varint) and the kind (u8)
//! 0x7F end       events varint, last exch_seq varint
//! ```
//! `dseq` is the event's `exch_seq` minus the previous event record's (varint, ≥ 1), `dts` its
//! exchange time minus the previous event record's (zz, ns); both start from 0 and the header's
//! start time. Catalog records precede the first event record that names them. A file without
//! its end record was cut short (the reader reports [`TruthError::Truncated`]).
//!
//! # Versioning
//! Readers reject versions they do not know. Within a version, writers may add record tags
//! (readers skip unknown tags by their length) and append fields at the end of a record's
//! payload (readers ignore trailing payload bytes). Any other change bumps the version.

use std::io::{self, Read, Write};

use thiserror::Error;

use super::config::MarketConfig;
use super::engine::Exchange;
use super::model::{
    BookSide, EventId, EventInfo, ExchEvent, ExchEventKind, LifecycleFields, LifecycleKind,
    MarketId, MarketInfo, MarketStatus, PriceGrid, SeriesId, SeriesInfo, Side, TickerState,
};

/// The file's first 8 bytes.
pub const TRUTH_MAGIC: [u8; 8] = *b"KDPTRUTH";
/// The format version this code writes and reads.
pub const TRUTH_VERSION: u16 = 1;
/// Header length in bytes.
pub const TRUTH_HEADER_LEN: usize = 40;
/// Largest record payload a reader accepts: far above any real record (a delivery record is the
/// biggest; writers split long logs), small enough that a corrupt length cannot exhaust memory.
pub const RECORD_LEN_MAX: u64 = 16 << 20;
/// Largest delivery items per record a writer emits (longer logs are split): keeps records
/// under [`RECORD_LEN_MAX`] even at the worst item size.
pub const DELIVERY_ITEMS_PER_RECORD_MAX: usize = 1 << 20;

const TAG_SERIES: u8 = 0x01;
const TAG_EVENT: u8 = 0x02;
const TAG_MARKET: u8 = 0x03;
const TAG_DELTA: u8 = 0x10;
const TAG_TRADE: u8 = 0x11;
const TAG_TICKER: u8 = 0x12;
const TAG_LIFECYCLE: u8 = 0x13;
const TAG_EVENT_CREATED: u8 = 0x14;
const TAG_DELIVERY: u8 = 0x20;
const TAG_END: u8 = 0x7F;

/// What the header says about the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruthHeader {
    /// Format version.
    pub version: u16,
    /// Engine seed.
    pub seed: u64,
    /// [`MarketConfig::digest`] of the run's configuration.
    pub config_digest: u64,
    /// Virtual start time, ns.
    pub start_ts_ns: i64,
    /// Exchange times are whole seconds.
    pub legacy_whole_second_times: bool,
}

impl TruthHeader {
    /// The header of a run of `cfg`.
    pub fn for_config(cfg: &MarketConfig) -> Self {
        Self {
            version: TRUTH_VERSION,
            seed: cfg.seed,
            config_digest: cfg.digest(),
            start_ts_ns: cfg.start_ts_ns,
            legacy_whole_second_times: cfg.legacy_whole_second_times,
        }
    }
}

/// A market's catalog entry as recorded (its static fields and its status when written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketEntry {
    /// Ticker.
    pub ticker: String,
    /// Event.
    pub event: EventId,
    /// Tick grid.
    pub grid: PriceGrid,
    /// Fractional sizes.
    pub fractional: bool,
    /// Status when the record was written.
    pub status: MarketStatus,
    /// Creation time.
    pub created_ts_ns: i64,
    /// Open time.
    pub open_ts_ns: i64,
    /// Close time when the record was written.
    pub close_ts_ns: i64,
    /// Yes sub-title.
    pub yes_sub_title: String,
}

impl From<&MarketInfo> for MarketEntry {
    fn from(m: &MarketInfo) -> Self {
        Self {
            ticker: m.ticker.clone(),
            event: m.event,
            grid: m.grid,
            fractional: m.fractional,
            status: m.status,
            created_ts_ns: m.created_ts_ns,
            open_ts_ns: m.open_ts_ns,
            close_ts_ns: m.close_ts_ns,
            yes_sub_title: m.yes_sub_title.clone(),
        }
    }
}

/// One exchange event as recorded: the event, and for a `MarketLifecycle` event the fields its
/// message carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthEvent {
    /// The event.
    pub event: ExchEvent,
    /// Lifecycle fields (`MarketLifecycle` events only).
    pub lifecycle: Option<LifecycleFields>,
}

/// One entry of a connection's delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryItem {
    /// The event with this `exch_seq` was sent on the connection.
    Delivered(u64),
    /// The event was sent again (a duplicate the transport injected).
    Duplicate(u64),
    /// The transport withheld these events from the connection (an injected gap).
    Gap {
        /// First withheld `exch_seq`.
        first: u64,
        /// Last withheld `exch_seq` (≥ `first`).
        last: u64,
    },
}

/// A piece of one connection's delivery log (a connection's log may span several records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLog {
    /// The transport's connection id.
    pub conn_id: u64,
    /// In delivery order.
    pub items: Vec<DeliveryItem>,
}

/// One record of a truth file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TruthRecord {
    /// A series of the catalog.
    Series {
        /// Its id.
        id: SeriesId,
        /// It.
        info: SeriesInfo,
    },
    /// An event of the catalog.
    Event {
        /// Its id.
        id: EventId,
        /// It.
        info: EventInfo,
    },
    /// A market of the catalog.
    Market {
        /// Its id.
        id: MarketId,
        /// It.
        entry: MarketEntry,
    },
    /// An exchange event.
    Exch(TruthEvent),
    /// Delivery log of a connection.
    Delivery(DeliveryLog),
    /// The end of the file.
    End {
        /// Event records written.
        events: u64,
        /// The last event's `exch_seq`.
        last_seq: u64,
    },
}

/// A truth file that cannot be read.
#[derive(Debug, Error)]
pub enum TruthError {
    /// Reading failed.
    #[error("truth file: read failed: {0}")]
    Io(#[from] io::Error),
    /// Not a truth file.
    #[error("truth file: bad magic (not a kdp ground-truth file)")]
    BadMagic,
    /// Written by a newer (or unknown) format version.
    #[error(
        "truth file: format version {0} is not supported (this build reads version 1); use a matching kdp"
    )]
    UnsupportedVersion(u16),
    /// A record does not parse.
    #[error("truth file: corrupt record {record} (tag {tag:#04x}): {what}")]
    Corrupt {
        /// 0-based record index.
        record: u64,
        /// Its tag.
        tag: u8,
        /// What is wrong.
        what: &'static str,
    },
    /// The file ends before its end record (the writer did not finish).
    #[error("truth file: ends after {0} records without an end record (the run was cut short)")]
    Truncated(u64),
}

// ---- encoding helpers -----------------------------------------------------------------------

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_zz(buf: &mut Vec<u8>, v: i64) {
    put_varint(buf, zigzag(v));
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

fn side_code(s: Side) -> u8 {
    match s {
        Side::Yes => 0,
        Side::No => 1,
    }
}

fn grid_code(g: PriceGrid) -> u8 {
    match g {
        PriceGrid::LinearCent => 0,
        PriceGrid::DeciCent => 1,
        PriceGrid::TaperedDeciCent => 2,
    }
}

fn status_code(s: MarketStatus) -> u8 {
    match s {
        MarketStatus::Initialized => 0,
        MarketStatus::Active => 1,
        MarketStatus::Inactive => 2,
        MarketStatus::Closed => 3,
        MarketStatus::Determined => 4,
        MarketStatus::Finalized => 5,
    }
}

fn lifecycle_code(k: LifecycleKind) -> u8 {
    match k {
        LifecycleKind::Created => 0,
        LifecycleKind::Activated => 1,
        LifecycleKind::Deactivated => 2,
        LifecycleKind::CloseDateUpdated => 3,
        LifecycleKind::Determined => 4,
        LifecycleKind::Settled => 5,
    }
}

/// Writes a truth file: header, then records, then [`TruthWriter::finish`].
#[derive(Debug)]
pub struct TruthWriter<W: Write> {
    w: W,
    buf: Vec<u8>,
    payload: Vec<u8>,
    prev_seq: u64,
    prev_ts_ns: i64,
    events: u64,
    series_written: usize,
    events_written: usize,
    markets_written: usize,
}

impl<W: Write> TruthWriter<W> {
    /// Writes the header.
    pub fn new(mut w: W, header: &TruthHeader) -> io::Result<Self> {
        let mut h = [0u8; TRUTH_HEADER_LEN];
        h[0..8].copy_from_slice(&TRUTH_MAGIC);
        h[8..10].copy_from_slice(&header.version.to_le_bytes());
        h[10..12].copy_from_slice(&u16::from(header.legacy_whole_second_times).to_le_bytes());
        h[16..24].copy_from_slice(&header.seed.to_le_bytes());
        h[24..32].copy_from_slice(&header.config_digest.to_le_bytes());
        h[32..40].copy_from_slice(&header.start_ts_ns.to_le_bytes());
        w.write_all(&h)?;
        Ok(Self {
            w,
            buf: Vec::with_capacity(64 << 10),
            payload: Vec::with_capacity(256),
            prev_seq: 0,
            prev_ts_ns: header.start_ts_ns,
            events: 0,
            series_written: 0,
            events_written: 0,
            markets_written: 0,
        })
    }

    fn flush_if_big(&mut self) -> io::Result<()> {
        if self.buf.len() >= 60 << 10 {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn frame(&mut self, tag: u8) -> io::Result<()> {
        self.buf.push(tag);
        put_varint(&mut self.buf, self.payload.len() as u64);
        self.buf.extend_from_slice(&self.payload);
        self.payload.clear();
        self.flush_if_big()
    }

    /// Writes any record (an `End` record here does not end the writer: use `finish`).
    pub fn write_record(&mut self, record: &TruthRecord) -> io::Result<()> {
        match record {
            TruthRecord::Series { id, info } => self.write_series(*id, info),
            TruthRecord::Event { id, info } => self.write_event_info(*id, info),
            TruthRecord::Market { id, entry } => self.write_market(*id, entry),
            TruthRecord::Exch(e) => self.write_event(&e.event, e.lifecycle.as_ref()),
            TruthRecord::Delivery(d) => self.write_delivery(d.conn_id, &d.items),
            TruthRecord::End { events, last_seq } => {
                put_varint(&mut self.payload, *events);
                put_varint(&mut self.payload, *last_seq);
                self.frame(TAG_END)
            }
        }
    }

    /// A series catalog record.
    pub fn write_series(&mut self, id: SeriesId, s: &SeriesInfo) -> io::Result<()> {
        let p = &mut self.payload;
        put_varint(p, id.into());
        put_str(p, &s.ticker);
        put_str(p, &s.title);
        put_str(p, &s.category);
        put_str(p, &s.frequency);
        self.frame(TAG_SERIES)
    }

    /// An event catalog record.
    pub fn write_event_info(&mut self, id: EventId, e: &EventInfo) -> io::Result<()> {
        let p = &mut self.payload;
        put_varint(p, id.into());
        put_str(p, &e.ticker);
        put_varint(p, e.series.into());
        put_str(p, &e.title);
        put_str(p, &e.sub_title);
        p.push(u8::from(e.mutually_exclusive));
        self.frame(TAG_EVENT)
    }

    /// A market catalog record.
    pub fn write_market(&mut self, id: MarketId, m: &MarketEntry) -> io::Result<()> {
        let p = &mut self.payload;
        put_varint(p, id.into());
        put_str(p, &m.ticker);
        put_varint(p, m.event.into());
        p.push(grid_code(m.grid));
        p.push(u8::from(m.fractional));
        p.push(status_code(m.status));
        put_zz(p, m.created_ts_ns);
        put_zz(p, m.open_ts_ns);
        put_zz(p, m.close_ts_ns);
        put_str(p, &m.yes_sub_title);
        self.frame(TAG_MARKET)
    }

    /// An exchange event (`lifecycle` for `MarketLifecycle` events; ignored for others).
    ///
    /// # Panics
    /// If `exch_seq` does not increase or the time goes back (the engine guarantees both).
    pub fn write_event(
        &mut self,
        ev: &ExchEvent,
        lifecycle: Option<&LifecycleFields>,
    ) -> io::Result<()> {
        assert!(
            ev.exch_seq > self.prev_seq,
            "truth: exch_seq {} after {}",
            ev.exch_seq,
            self.prev_seq
        );
        assert!(ev.ts_ns >= self.prev_ts_ns, "truth: time {} after {}", ev.ts_ns, self.prev_ts_ns);
        let p = &mut self.payload;
        put_varint(p, ev.exch_seq - self.prev_seq);
        put_zz(p, ev.ts_ns - self.prev_ts_ns);
        self.prev_seq = ev.exch_seq;
        self.prev_ts_ns = ev.ts_ns;
        self.events += 1;
        let tag = match &ev.kind {
            ExchEventKind::Delta { market, side, price_micros, delta_centi } => {
                put_varint(p, (*market).into());
                p.push(side_code(*side));
                put_varint(p, (*price_micros).into());
                put_zz(p, *delta_centi);
                TAG_DELTA
            }
            ExchEventKind::Trade {
                market,
                trade_id,
                yes_price_micros,
                count_centi,
                taker_side,
                taker_book_side,
            } => {
                put_varint(p, (*market).into());
                p.extend_from_slice(trade_id);
                put_varint(p, (*yes_price_micros).into());
                put_zz(p, *count_centi);
                p.push(side_code(*taker_side) | (u8::from(*taker_book_side == BookSide::Bid) << 1));
                TAG_TRADE
            }
            ExchEventKind::Ticker { market, state } => {
                put_varint(p, (*market).into());
                let s = state;
                p.push(
                    u8::from(s.last_price_micros.is_some())
                        | (u8::from(s.last_trade_size_centi.is_some()) << 1),
                );
                if let Some(v) = s.last_price_micros {
                    put_varint(p, v.into());
                }
                put_varint(p, s.yes_bid_micros.into());
                put_varint(p, s.yes_ask_micros.into());
                put_zz(p, s.yes_bid_size_centi);
                put_zz(p, s.yes_ask_size_centi);
                if let Some(v) = s.last_trade_size_centi {
                    put_zz(p, v);
                }
                put_zz(p, s.volume_centi);
                put_zz(p, s.open_interest_centi);
                put_zz(p, s.dollar_volume);
                put_zz(p, s.dollar_open_interest);
                TAG_TICKER
            }
            ExchEventKind::MarketLifecycle { market, kind } => {
                put_varint(p, (*market).into());
                p.push(lifecycle_code(*kind));
                let f = lifecycle.copied().unwrap_or(LifecycleFields {
                    open_ts_ns: 0,
                    close_ts_ns: 0,
                    determined_ts_ns: None,
                    settled_ts_ns: None,
                    result: None,
                    settlement_value_micros: None,
                    is_deactivated: false,
                });
                let flags = u8::from(f.determined_ts_ns.is_some())
                    | (u8::from(f.settled_ts_ns.is_some()) << 1)
                    | (u8::from(f.result.is_some()) << 2)
                    | (u8::from(f.result == Some(Side::Yes)) << 3)
                    | (u8::from(f.settlement_value_micros.is_some()) << 4)
                    | (u8::from(f.is_deactivated) << 5);
                p.push(flags);
                put_zz(p, f.open_ts_ns);
                put_zz(p, f.close_ts_ns);
                if let Some(v) = f.determined_ts_ns {
                    put_zz(p, v);
                }
                if let Some(v) = f.settled_ts_ns {
                    put_zz(p, v);
                }
                if let Some(v) = f.settlement_value_micros {
                    put_varint(p, v.into());
                }
                TAG_LIFECYCLE
            }
            ExchEventKind::EventCreated { event } => {
                put_varint(p, (*event).into());
                TAG_EVENT_CREATED
            }
        };
        self.frame(tag)
    }

    /// A connection's delivery log (split into several records when long; one record when empty).
    pub fn write_delivery(&mut self, conn_id: u64, items: &[DeliveryItem]) -> io::Result<()> {
        // An empty log still gets its record: the connection existed and was sent nothing.
        let empty: [&[DeliveryItem]; 1] = [&[]];
        let chunks: Vec<&[DeliveryItem]> = if items.is_empty() {
            empty.to_vec()
        } else {
            items.chunks(DELIVERY_ITEMS_PER_RECORD_MAX).collect()
        };
        for chunk in chunks {
            let p = &mut self.payload;
            put_varint(p, conn_id);
            put_varint(p, chunk.len() as u64);
            let mut prev: u64 = 0;
            for item in chunk {
                let (seq, kind, last) = match *item {
                    DeliveryItem::Delivered(s) => (s, 0, s),
                    DeliveryItem::Duplicate(s) => (s, 1, s),
                    DeliveryItem::Gap { first, last } => {
                        assert!(last >= first, "truth: delivery gap {first}..={last} is reversed");
                        (first, 2, last)
                    }
                };
                let zz = zigzag(seq.wrapping_sub(prev) as i64);
                if zz < 1 << 62 {
                    put_varint(p, (zz << 2) | kind);
                } else {
                    // A jump too far for the 2-bit tag: escape, then the absolute seq and kind.
                    put_varint(p, 3);
                    put_varint(p, seq);
                    p.push(kind as u8);
                }
                if kind == 2 {
                    put_varint(p, last - seq);
                }
                prev = last;
            }
            self.frame(TAG_DELIVERY)?;
        }
        Ok(())
    }

    /// Writes the catalog entries `exch` added since the last call (all of them the first time).
    pub fn sync_catalog(&mut self, exch: &Exchange) -> io::Result<()> {
        while self.series_written < exch.series().len() {
            let i = self.series_written;
            self.write_series(i as SeriesId, &exch.series()[i])?;
            self.series_written += 1;
        }
        while self.events_written < exch.events().len() {
            let i = self.events_written;
            self.write_event_info(i as EventId, &exch.events()[i])?;
            self.events_written += 1;
        }
        while self.markets_written < exch.markets().len() {
            let i = self.markets_written;
            self.write_market(i as MarketId, &MarketEntry::from(&exch.markets()[i]))?;
            self.markets_written += 1;
        }
        Ok(())
    }

    /// Records `ev`, just pulled from `exch`: first any new catalog entries, then the event with
    /// its lifecycle fields.
    pub fn record(&mut self, exch: &Exchange, ev: &ExchEvent) -> io::Result<()> {
        self.sync_catalog(exch)?;
        let fields = match ev.kind {
            ExchEventKind::MarketLifecycle { market, .. } => Some(exch.lifecycle_fields(market)),
            _ => None,
        };
        self.write_event(ev, fields.as_ref())
    }

    /// Writes the end record, flushes, and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        let end = TruthRecord::End { events: self.events, last_seq: self.prev_seq };
        self.write_record(&end)?;
        self.w.write_all(&self.buf)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

// ---- reading ------------------------------------------------------------------------------

/// Tickers of the catalog read so far, by id (what COPY rows name markets and events by).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruthCatalog {
    /// Series tickers.
    pub series: Vec<String>,
    /// Event tickers.
    pub events: Vec<String>,
    /// Market tickers.
    pub markets: Vec<String>,
    /// Each market's event.
    pub market_event: Vec<EventId>,
}

fn put_at<T: Clone + Default>(v: &mut Vec<T>, i: usize, x: T) {
    if v.len() <= i {
        v.resize(i + 1, T::default());
    }
    v[i] = x;
}

/// A cursor over one record's payload.
struct Payload<'a> {
    b: &'a [u8],
    record: u64,
    tag: u8,
}

impl Payload<'_> {
    fn corrupt(&self, what: &'static str) -> TruthError {
        TruthError::Corrupt { record: self.record, tag: self.tag, what }
    }

    fn u8(&mut self) -> Result<u8, TruthError> {
        let (&x, rest) = self.b.split_first().ok_or_else(|| self.corrupt("payload too short"))?;
        self.b = rest;
        Ok(x)
    }

    fn varint(&mut self) -> Result<u64, TruthError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            if shift == 63 && byte > 1 {
                return Err(self.corrupt("varint overflows 64 bits"));
            }
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint longer than 10 bytes"))
    }

    fn zz(&mut self) -> Result<i64, TruthError> {
        Ok(unzigzag(self.varint()?))
    }

    fn u32(&mut self) -> Result<u32, TruthError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.corrupt("value exceeds 32 bits"))
    }

    fn str(&mut self) -> Result<String, TruthError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.corrupt("string length"))?;
        if n > self.b.len() {
            return Err(self.corrupt("string runs past the record"));
        }
        let (s, rest) = self.b.split_at(n);
        self.b = rest;
        String::from_utf8(s.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn side(&mut self) -> Result<Side, TruthError> {
        match self.u8()? {
            0 => Ok(Side::Yes),
            1 => Ok(Side::No),
            _ => Err(self.corrupt("bad side")),
        }
    }
}

/// Reads a truth file: the header on construction, then records as an iterator. The source is
/// buffered internally (records are read a byte at a time), so pass a plain `File`.
#[derive(Debug)]
pub struct TruthReader<R: Read> {
    r: io::BufReader<R>,
    header: TruthHeader,
    payload: Vec<u8>,
    prev_seq: u64,
    prev_ts_ns: i64,
    records: u64,
    done: bool,
    catalog: TruthCatalog,
}

impl<R: Read> TruthReader<R> {
    /// Reads and checks the header.
    pub fn new(r: R) -> Result<Self, TruthError> {
        let mut r = io::BufReader::new(r);
        let mut h = [0u8; TRUTH_HEADER_LEN];
        r.read_exact(&mut h)?;
        if h[0..8] != TRUTH_MAGIC {
            return Err(TruthError::BadMagic);
        }
        let le8 = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            b
        };
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != TRUTH_VERSION {
            return Err(TruthError::UnsupportedVersion(version));
        }
        let flags = u16::from_le_bytes([h[10], h[11]]);
        let header = TruthHeader {
            version,
            seed: u64::from_le_bytes(le8(16)),
            config_digest: u64::from_le_bytes(le8(24)),
            start_ts_ns: i64::from_le_bytes(le8(32)),
            legacy_whole_second_times: flags & 1 != 0,
        };
        Ok(Self {
            r,
            header,
            payload: Vec::new(),
            prev_seq: 0,
            prev_ts_ns: header.start_ts_ns,
            records: 0,
            done: false,
            catalog: TruthCatalog::default(),
        })
    }

    /// The header.
    pub fn header(&self) -> &TruthHeader {
        &self.header
    }

    /// Tickers of the catalog records read so far.
    pub fn catalog(&self) -> &TruthCatalog {
        &self.catalog
    }

    /// Reads one byte; `None` at a clean end of input.
    fn byte(&mut self) -> Result<Option<u8>, TruthError> {
        let mut b = [0u8; 1];
        loop {
            match self.r.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn next_record(&mut self) -> Result<Option<TruthRecord>, TruthError> {
        let Some(tag) = self.byte()? else {
            return Err(TruthError::Truncated(self.records));
        };
        let record = self.records;
        let corrupt = |what| TruthError::Corrupt { record, tag, what };
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?.ok_or_else(|| corrupt("length cut short"))?;
            len |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(corrupt("length varint too long"));
            }
        }
        if len > RECORD_LEN_MAX {
            return Err(corrupt("record longer than RECORD_LEN_MAX"));
        }
        self.payload.resize(len as usize, 0);
        self.r.read_exact(&mut self.payload).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt("payload cut short")
            } else {
                e.into()
            }
        })?;
        self.records += 1;
        let payload = std::mem::take(&mut self.payload);
        let mut p = Payload { b: &payload, record, tag };
        let out = self.parse(tag, &mut p);
        self.payload = payload;
        out
    }

    fn event_head(&mut self, p: &mut Payload<'_>) -> Result<(u64, i64), TruthError> {
        let dseq = p.varint()?;
        if dseq == 0 {
            return Err(p.corrupt("exch_seq does not increase"));
        }
        let dts = p.zz()?;
        if dts < 0 {
            return Err(p.corrupt("exchange time goes back"));
        }
        self.prev_seq =
            self.prev_seq.checked_add(dseq).ok_or_else(|| p.corrupt("exch_seq overflows"))?;
        self.prev_ts_ns =
            self.prev_ts_ns.checked_add(dts).ok_or_else(|| p.corrupt("time overflows"))?;
        Ok((self.prev_seq, self.prev_ts_ns))
    }

    fn parse(&mut self, tag: u8, p: &mut Payload<'_>) -> Result<Option<TruthRecord>, TruthError> {
        let exch = |exch_seq, ts_ns, kind, lifecycle| {
            Ok(Some(TruthRecord::Exch(TruthEvent {
                event: ExchEvent { exch_seq, ts_ns, kind },
                lifecycle,
            })))
        };
        match tag {
            TAG_SERIES => {
                let id = p.u32()?;
                let info = SeriesInfo {
                    ticker: p.str()?,
                    title: p.str()?,
                    category: p.str()?,
                    frequency: p.str()?,
                };
                put_at(&mut self.catalog.series, id as usize, info.ticker.clone());
                Ok(Some(TruthRecord::Series { id, info }))
            }
            TAG_EVENT => {
                let id = p.u32()?;
                let info = EventInfo {
                    ticker: p.str()?,
                    series: p.u32()?,
                    title: p.str()?,
                    sub_title: p.str()?,
                    mutually_exclusive: p.u8()? != 0,
                };
                put_at(&mut self.catalog.events, id as usize, info.ticker.clone());
                Ok(Some(TruthRecord::Event { id, info }))
            }
            TAG_MARKET => {
                let id = p.u32()?;
                let ticker = p.str()?;
                let event = p.u32()?;
                let grid = match p.u8()? {
                    0 => PriceGrid::LinearCent,
                    1 => PriceGrid::DeciCent,
                    2 => PriceGrid::TaperedDeciCent,
                    _ => return Err(p.corrupt("bad grid")),
                };
                let fractional = p.u8()? != 0;
                let status = match p.u8()? {
                    0 => MarketStatus::Initialized,
                    1 => MarketStatus::Active,
                    2 => MarketStatus::Inactive,
                    3 => MarketStatus::Closed,
                    4 => MarketStatus::Determined,
                    5 => MarketStatus::Finalized,
                    _ => return Err(p.corrupt("bad status")),
                };
                let entry = MarketEntry {
                    ticker,
                    event,
                    grid,
                    fractional,
                    status,
                    created_ts_ns: p.zz()?,
                    open_ts_ns: p.zz()?,
                    close_ts_ns: p.zz()?,
                    yes_sub_title: p.str()?,
                };
                put_at(&mut self.catalog.markets, id as usize, entry.ticker.clone());
                put_at(&mut self.catalog.market_event, id as usize, event);
                Ok(Some(TruthRecord::Market { id, entry }))
            }
            TAG_DELTA => {
                let (seq, ts) = self.event_head(p)?;
                let kind = ExchEventKind::Delta {
                    market: p.u32()?,
                    side: p.side()?,
                    price_micros: p.u32()?,
                    delta_centi: p.zz()?,
                };
                exch(seq, ts, kind, None)
            }
            TAG_TRADE => {
                let (seq, ts) = self.event_head(p)?;
                let market = p.u32()?;
                let mut trade_id = [0u8; 16];
                for b in &mut trade_id {
                    *b = p.u8()?;
                }
                let yes_price_micros = p.u32()?;
                let count_centi = p.zz()?;
                let flags = p.u8()?;
                let kind = ExchEventKind::Trade {
                    market,
                    trade_id,
                    yes_price_micros,
                    count_centi,
                    taker_side: if flags & 1 == 0 { Side::Yes } else { Side::No },
                    taker_book_side: if flags & 2 == 0 { BookSide::Ask } else { BookSide::Bid },
                };
                exch(seq, ts, kind, None)
            }
            TAG_TICKER => {
                let (seq, ts) = self.event_head(p)?;
                let market = p.u32()?;
                let flags = p.u8()?;
                let last_price_micros = if flags & 1 != 0 { Some(p.u32()?) } else { None };
                let yes_bid_micros = p.u32()?;
                let yes_ask_micros = p.u32()?;
                let yes_bid_size_centi = p.zz()?;
                let yes_ask_size_centi = p.zz()?;
                let last_trade_size_centi = if flags & 2 != 0 { Some(p.zz()?) } else { None };
                let state = TickerState {
                    last_price_micros,
                    yes_bid_micros,
                    yes_ask_micros,
                    yes_bid_size_centi,
                    yes_ask_size_centi,
                    last_trade_size_centi,
                    volume_centi: p.zz()?,
                    open_interest_centi: p.zz()?,
                    dollar_volume: p.zz()?,
                    dollar_open_interest: p.zz()?,
                };
                exch(seq, ts, ExchEventKind::Ticker { market, state }, None)
            }
            TAG_LIFECYCLE => {
                let (seq, ts) = self.event_head(p)?;
                let market = p.u32()?;
                let kind = match p.u8()? {
                    0 => LifecycleKind::Created,
                    1 => LifecycleKind::Activated,
                    2 => LifecycleKind::Deactivated,
                    3 => LifecycleKind::CloseDateUpdated,
                    4 => LifecycleKind::Determined,
                    5 => LifecycleKind::Settled,
                    _ => return Err(p.corrupt("bad lifecycle kind")),
                };
                let flags = p.u8()?;
                let open_ts_ns = p.zz()?;
                let close_ts_ns = p.zz()?;
                let determined_ts_ns = if flags & 1 != 0 { Some(p.zz()?) } else { None };
                let settled_ts_ns = if flags & 2 != 0 { Some(p.zz()?) } else { None };
                let settlement_value_micros = if flags & 16 != 0 { Some(p.u32()?) } else { None };
                let fields = LifecycleFields {
                    open_ts_ns,
                    close_ts_ns,
                    determined_ts_ns,
                    settled_ts_ns,
                    result: if flags & 4 == 0 {
                        None
                    } else if flags & 8 != 0 {
                        Some(Side::Yes)
                    } else {
                        Some(Side::No)
                    },
                    settlement_value_micros,
                    is_deactivated: flags & 32 != 0,
                };
                exch(seq, ts, ExchEventKind::MarketLifecycle { market, kind }, Some(fields))
            }
            TAG_EVENT_CREATED => {
                let (seq, ts) = self.event_head(p)?;
                exch(seq, ts, ExchEventKind::EventCreated { event: p.u32()? }, None)
            }
            TAG_DELIVERY => {
                let conn_id = p.varint()?;
                let n = p.varint()?;
                if n > p.b.len() as u64 {
                    return Err(p.corrupt("more delivery items than bytes"));
                }
                let mut items = Vec::with_capacity(n as usize);
                let mut prev: u64 = 0;
                for _ in 0..n {
                    let v = p.varint()?;
                    let (seq, kind) = if v == 3 {
                        (p.varint()?, u64::from(p.u8()?))
                    } else {
                        (prev.wrapping_add(unzigzag(v >> 2) as u64), v & 3)
                    };
                    let item = match kind {
                        0 => DeliveryItem::Delivered(seq),
                        1 => DeliveryItem::Duplicate(seq),
                        2 => {
                            let last = seq
                                .checked_add(p.varint()?)
                                .ok_or_else(|| p.corrupt("gap overflows"))?;
                            DeliveryItem::Gap { first: seq, last }
                        }
                        _ => return Err(p.corrupt("bad delivery item kind")),
                    };
                    prev = match item {
                        DeliveryItem::Gap { last, .. } => last,
                        _ => seq,
                    };
                    items.push(item);
                }
                Ok(Some(TruthRecord::Delivery(DeliveryLog { conn_id, items })))
            }
            TAG_END => {
                let events = p.varint()?;
                let last_seq = p.varint()?;
                if last_seq != self.prev_seq {
                    return Err(
                        p.corrupt("end record's last exch_seq differs from the last event's")
                    );
                }
                self.done = true;
                Ok(Some(TruthRecord::End { events, last_seq }))
            }
            _ => Ok(None),
        }
    }
}

impl<R: Read> Iterator for TruthReader<R> {
    type Item = Result<TruthRecord, TruthError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.next_record() {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => {} // An unknown tag from a newer writer of this version: skipped.
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

// ---- PostgreSQL COPY text ------------------------------------------------------------------

/// Columns of [`to_copy_text`] rows, in order (for `COPY exch_event (…) FROM STDIN`). Integer
/// columns fit `bigint`; `trade_id` is a `uuid`; text columns use the Kalshi vocabulary; a column
/// that does not apply to the row's kind is NULL.
pub const EXCH_EVENT_COLUMNS: [&str; 31] = [
    "exch_seq",
    "ts_ns",
    "kind", // delta | trade | ticker | market_lifecycle | event_created
    "market_ticker",
    "event_ticker",
    "side", // yes | no (delta)
    "price_micros",
    "delta_centi",
    "trade_id",
    "yes_price_micros",
    "count_centi",
    "taker_side",      // yes | no
    "taker_book_side", // ask | bid
    "last_price_micros",
    "yes_bid_micros",
    "yes_ask_micros",
    "yes_bid_size_centi",
    "yes_ask_size_centi",
    "last_trade_size_centi",
    "volume_centi",
    "open_interest_centi",
    "dollar_volume",
    "dollar_open_interest",
    "lifecycle_kind", // created | activated | deactivated | close_date_updated | determined | settled
    "open_ts_ns",
    "close_ts_ns",
    "determined_ts_ns",
    "settled_ts_ns",
    "result", // yes | no
    "settlement_value_micros",
    "is_deactivated", // t | f
];

/// Columns of [`delivery_copy_text`] rows: `conn_id`, `item` (`delivered` | `duplicate` |
/// `gap`), `first_seq`, `last_seq` (equal except for gaps).
pub const DELIVERY_COLUMNS: [&str; 4] = ["conn_id", "item", "first_seq", "last_seq"];

const NULL: &str = "\\N";

fn copy_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Yes => "yes",
        Side::No => "no",
    }
}

/// Kalshi's `event_type` name of a lifecycle kind.
pub fn lifecycle_name(k: LifecycleKind) -> &'static str {
    match k {
        LifecycleKind::Created => "created",
        LifecycleKind::Activated => "activated",
        LifecycleKind::Deactivated => "deactivated",
        LifecycleKind::CloseDateUpdated => "close_date_updated",
        LifecycleKind::Determined => "determined",
        LifecycleKind::Settled => "settled",
    }
}

/// A trade id in UUID text form (lowercase, hyphenated).
pub fn uuid_text(id: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// One PostgreSQL COPY text row (tab-separated, `\N` for NULL, newline-terminated) for an event,
/// in [`EXCH_EVENT_COLUMNS`] order, naming markets and events through `catalog` (an id missing
/// from it is rendered as `#<id>`).
pub fn to_copy_text(ev: &TruthEvent, catalog: &TruthCatalog) -> String {
    let mut cols: Vec<String> = vec![NULL.to_string(); EXCH_EVENT_COLUMNS.len()];
    let e = &ev.event;
    cols[0] = e.exch_seq.to_string();
    cols[1] = e.ts_ns.to_string();
    let market_name =
        |m: MarketId| catalog.markets.get(m as usize).cloned().unwrap_or_else(|| format!("#{m}"));
    let event_name =
        |id: EventId| catalog.events.get(id as usize).cloned().unwrap_or_else(|| format!("#{id}"));
    if let Some(m) = e.kind.market() {
        cols[3] = market_name(m);
        if let Some(&ev_id) = catalog.market_event.get(m as usize) {
            cols[4] = event_name(ev_id);
        }
    }
    let opt = |v: Option<i64>| v.map_or_else(|| NULL.to_string(), |v| v.to_string());
    let kind = match &e.kind {
        ExchEventKind::Delta { side, price_micros, delta_centi, .. } => {
            cols[5] = side_name(*side).to_string();
            cols[6] = price_micros.to_string();
            cols[7] = delta_centi.to_string();
            "delta"
        }
        ExchEventKind::Trade {
            trade_id,
            yes_price_micros,
            count_centi,
            taker_side,
            taker_book_side,
            ..
        } => {
            cols[8] = uuid_text(trade_id);
            cols[9] = yes_price_micros.to_string();
            cols[10] = count_centi.to_string();
            cols[11] = side_name(*taker_side).to_string();
            cols[12] = match taker_book_side {
                BookSide::Ask => "ask",
                BookSide::Bid => "bid",
            }
            .to_string();
            "trade"
        }
        ExchEventKind::Ticker { state: s, .. } => {
            cols[13] = opt(s.last_price_micros.map(i64::from));
            cols[14] = s.yes_bid_micros.to_string();
            cols[15] = s.yes_ask_micros.to_string();
            cols[16] = s.yes_bid_size_centi.to_string();
            cols[17] = s.yes_ask_size_centi.to_string();
            cols[18] = opt(s.last_trade_size_centi);
            cols[19] = s.volume_centi.to_string();
            cols[20] = s.open_interest_centi.to_string();
            cols[21] = s.dollar_volume.to_string();
            cols[22] = s.dollar_open_interest.to_string();
            "ticker"
        }
        ExchEventKind::MarketLifecycle { kind, .. } => {
            cols[23] = lifecycle_name(*kind).to_string();
            if let Some(f) = &ev.lifecycle {
                cols[24] = f.open_ts_ns.to_string();
                cols[25] = f.close_ts_ns.to_string();
                cols[26] = opt(f.determined_ts_ns);
                cols[27] = opt(f.settled_ts_ns);
                cols[28] = f.result.map_or_else(|| NULL.to_string(), |r| side_name(r).to_string());
                cols[29] = opt(f.settlement_value_micros.map(i64::from));
                cols[30] = if f.is_deactivated { "t" } else { "f" }.to_string();
            }
            "market_lifecycle"
        }
        ExchEventKind::EventCreated { event } => {
            cols[4] = event_name(*event);
            "event_created"
        }
    };
    cols[2] = kind.to_string();
    let mut out = String::with_capacity(160);
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        if c == NULL {
            out.push_str(NULL);
        } else {
            copy_escape(&mut out, c);
        }
    }
    out.push('\n');
    out
}

/// PostgreSQL COPY text rows for a delivery log, one per item, in [`DELIVERY_COLUMNS`] order.
pub fn delivery_copy_text(log: &DeliveryLog) -> String {
    let mut out = String::new();
    for item in &log.items {
        let (name, first, last) = match *item {
            DeliveryItem::Delivered(s) => ("delivered", s, s),
            DeliveryItem::Duplicate(s) => ("duplicate", s, s),
            DeliveryItem::Gap { first, last } => ("gap", first, last),
        };
        out.push_str(&format!("{}\t{name}\t{first}\t{last}\n", log.conn_id));
    }
    out
}

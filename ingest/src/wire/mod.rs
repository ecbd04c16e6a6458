//! Kalshi's WebSocket wire protocol: frames in, normalized events out; client commands out.
//!
//! Where it sits: a shard's session hands every text frame to [`FrameParser::parse`] and gets a
//! [`Frame`] (the envelope's `id`/`sid`/`seq` plus a typed [`Message`]). Market-data messages
//! arrive already normalized into `kdp_engine::event` types (exact integers, ns times), so the
//! rest of kdp never sees JSON.
//!
//! How: the frame is copied into a reused, padded buffer and parsed in place by simd-json into a
//! reused tape ([`simd_json::fill_tape_padded`]); the message is read off the tape in one pass over
//! its fields. After warm-up, parsing a delta, trade or ticker allocates nothing. The caller's
//! frame is left untouched, so a frame that fails to parse (or has an unknown `type`) can still be
//! stored verbatim.
//!
//! Shapes: both the current ones (`*_dollars` strings, `*_fp` counts, `ts_ms`) and the legacy
//! ones (integer cents and counts, `*_dollars` with integer counts, whole-second `ts`) are read.
//! When a message carries several representations of one value, the most precise one is used.

mod command;
mod decimal;
mod encode;
mod parse;
mod time;

pub use command::{Channel, Command, MarketFilter, UpdateAction, encode_command};
pub use decimal::{DecimalError, parse_scaled, write_scaled};
pub use encode::{Shape, encode_event, market_lifecycle_payload};
pub use time::{TimeError, parse_rfc3339, parse_rfc3339_ns, write_rfc3339};

use kdp_engine::event::{Event, Level};
use simd_json::{Buffers, INPUT_PADDING, Tape};

/// Largest frame accepted, in bytes. Kalshi's WebSocket message limit is reported as 64 MiB; a
/// larger frame is refused before any copy so one bad frame cannot balloon a shard's memory.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// Initial capacity of the parser's reused buffers: a typical delta is ~200 bytes and a large
/// snapshot a few KiB; buffers grow to the largest frame seen and stay there.
const FRAME_BYTES_INITIAL: usize = 4096;

/// The envelope fields every server frame may carry. All are connection-local: never identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Client command id this frame answers (`0`/absent = unsolicited).
    pub id: Option<u64>,
    /// Subscription id (connection-local).
    pub sid: Option<u64>,
    /// Sequence number within the sid, shared by all its markets.
    pub seq: Option<u64>,
    /// When the exchange queued this frame (ms), if sent.
    pub sending_ts_ms: Option<i64>,
}

/// One subscription as listed by a `list_subscriptions` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionInfo<'a> {
    /// Channel name.
    pub channel: &'a str,
    /// Subscription id.
    pub sid: u64,
}

/// The body of an `ok` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OkReply<'a> {
    /// Full ticker set of the subscription after an `update_subscription` (absent with
    /// `skip_ticker_ack`).
    pub market_tickers: Option<Vec<&'a str>>,
    /// The session's subscriptions (reply to `list_subscriptions`).
    pub subscriptions: Option<Vec<SubscriptionInfo<'a>>>,
}

/// A server frame's typed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A normalized market-data event.
    Event(Event<'a>),
    /// A subscription was created (one per channel of a `subscribe`).
    Subscribed {
        /// Channel name.
        channel: &'a str,
        /// The new (or merged-into) subscription id.
        sid: u64,
    },
    /// A command succeeded.
    Ok(OkReply<'a>),
    /// A subscription was removed.
    Unsubscribed,
    /// A command or subscription failed.
    Error {
        /// Kalshi error code (see the protocol note: 25 = slow reader, 10 = channel error, ...).
        code: u32,
        /// Kalshi's message text.
        message: &'a str,
        /// The market the error concerns, when sent.
        market_ticker: Option<&'a str>,
    },
    /// A `type` this build does not know. The caller stores the original frame as a raw row and
    /// counts it; the session goes on.
    Unknown {
        /// The unknown `type` value.
        type_name: &'a str,
    },
}

/// A parsed server frame: envelope plus typed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Connection-local envelope fields.
    pub envelope: Envelope,
    /// Typed content.
    pub message: Message<'a>,
}

/// Why a frame could not be parsed. Every variant names the offending field; none is fatal to a
/// session: the caller counts the frame, keeps it raw, and reads on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not valid JSON.
    #[error("frame is not valid JSON (at byte {offset}: {detail})")]
    Json {
        /// Byte offset simd-json stopped at.
        offset: usize,
        /// simd-json's description.
        detail: String,
    },
    /// The frame is larger than [`FRAME_BYTES_MAX`].
    #[error("frame of {len} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")]
    TooLarge {
        /// Frame length in bytes.
        len: usize,
    },
    /// The frame (or its `msg`) is not a JSON object where one is required.
    #[error("`{field}` is not a JSON object")]
    NotAnObject {
        /// `"frame"` or the field name.
        field: &'static str,
    },
    /// A required field is absent.
    #[error("{message} frame has no `{field}`")]
    MissingField {
        /// The message type.
        message: &'static str,
        /// The missing field (alternatives separated by `|`).
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("`{field}` should be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// A decimal string is malformed.
    #[error("`{field}` is not a decimal number")]
    BadDecimal {
        /// The field.
        field: &'static str,
    },
    /// A decimal has nonzero digits below what kdp stores exactly.
    #[error("`{field}` has nonzero digits beyond {max_decimals} decimals; refusing to round")]
    TooMuchPrecision {
        /// The field.
        field: &'static str,
        /// Decimals kdp stores for this field.
        max_decimals: u8,
    },
    /// A value is outside its valid range (prices: within $0–$1; sizes: sign rules).
    #[error("`{field}` is out of range: {value} (in kdp units)")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value in kdp units (micro-dollars or hundredths), saturated.
        value: i64,
    },
    /// A timestamp is malformed.
    #[error("`{field}` is not a valid timestamp")]
    BadTimestamp {
        /// The field.
        field: &'static str,
    },
    /// A side is neither `yes` nor `no` (or `ask`/`bid` for book sides).
    #[error("`{field}` is not a valid side")]
    BadSide {
        /// The field.
        field: &'static str,
    },
    /// A decimal value arrived as a JSON float, which cannot be read exactly.
    #[error("`{field}` is a JSON float; kdp needs a decimal string or an integer to stay exact")]
    InexactNumber {
        /// The field.
        field: &'static str,
    },
}

/// A reusable, allocation-free-after-warm-up frame parser. One per shard.
pub struct FrameParser {
    /// The frame copy simd-json parses in place (plus its padding).
    input: Vec<u8>,
    /// simd-json's stage-1/stage-2 scratch space.
    buffers: Buffers,
    /// The tape's node storage, kept between frames (empty between calls).
    tape: Option<Tape<'static>>,
    /// Snapshot levels of the current frame: YES first, then NO.
    levels: Vec<Level>,
}

impl std::fmt::Debug for FrameParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameParser")
            .field("input_capacity", &self.input.capacity())
            .field("levels_capacity", &self.levels.capacity())
            .finish_non_exhaustive()
    }
}

impl Default for FrameParser {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameParser {
    /// A parser with buffers sized for typical frames.
    pub fn new() -> Self {
        Self {
            input: Vec::with_capacity(FRAME_BYTES_INITIAL + INPUT_PADDING),
            buffers: Buffers::new(FRAME_BYTES_INITIAL),
            tape: Some(Tape::null()),
            levels: Vec::new(),
        }
    }

    /// Parses one server text frame. The returned frame borrows the parser's copy of the bytes
    /// (tickers and ids are `&str` into it), so it lives until the next call.
    pub fn parse<'p>(&'p mut self, frame: &[u8]) -> Result<Frame<'p>, ParseError> {
        if frame.len() > FRAME_BYTES_MAX {
            return Err(ParseError::TooLarge { len: frame.len() });
        }
        let Self { input, buffers, tape, levels } = self;
        // simd-json reads up to INPUT_PADDING bytes past the document; their content does not
        // matter, so the buffer only grows (zero-filled) and is never cleared.
        let padded_len = frame.len() + INPUT_PADDING;
        if input.len() < padded_len {
            input.resize(padded_len, 0);
        }
        let input: &'p mut [u8] = &mut input[..padded_len];
        input[..frame.len()].copy_from_slice(frame);
        let mut nodes: Tape<'p> = tape.take().unwrap_or_else(Tape::null).reset();
        levels.clear();
        let parsed = match simd_json::fill_tape_padded(input, frame.len(), buffers, &mut nodes) {
            Ok(()) => parse::frame(&nodes.0, levels),
            Err(e) => Err(ParseError::Json { offset: e.index(), detail: e.to_string() }),
        };
        *tape = Some(nodes.reset());
        let levels: &'p [Level] = levels;
        parsed.map(|(mut frame, yes_len)| {
            if let (Message::Event(Event::Snapshot(snap)), Some(yes_len)) =
                (&mut frame.message, yes_len)
            {
                let (yes, no) = levels.split_at(yes_len.min(levels.len()));
                snap.yes = yes;
                snap.no = no;
            }
            frame
        })
    }
}

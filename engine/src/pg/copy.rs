//! Binary `COPY … FROM STDIN (FORMAT binary)` encoded by hand into one reused buffer and sent in
//! large chunks.
//!
//! Why not `postgres::binary_copy::BinaryCopyInWriter`: it encodes each row through dynamic
//! `ToSql` dispatch and enters the synchronous client's tokio `block_on` once per row; profiled
//! in the gatherer writer, that dominated the writer's time, not the encoding. Here a row is a
//! few big-endian stores into a `Vec<u8>`, and the driver is entered once per
//! [`CHUNK_BYTES`] and at [`BinaryCopyIn::finish`].
//!
//! The format (PostgreSQL documentation, `COPY`, "Binary Format"; all integers in network byte
//! order):
//!
//! - header: the 11-byte signature `PGCOPY\n\xff\r\n\0`, an i32 flags field (0: no OIDs), an i32
//!   header-extension length (0);
//! - per tuple: an i16 field count, then per field an i32 length in bytes (−1: NULL, no bytes
//!   follow) and the value in its type's binary send format;
//! - trailer: the i16 −1.
//!
//! Value formats written here (the types' `*send` functions): `int2`/`int4`/`int8` as 2/4/8
//! big-endian bytes; `bool` as one byte 0 or 1; `text` as its UTF-8 bytes (the client encoding
//! the `postgres` crate sets is UTF8); `bytea` as the raw bytes; one-dimensional arrays as
//! `array_send` writes them: i32 number of dimensions, i32 has-null flag, u32 element type OID,
//! per dimension i32 length and i32 lower bound (1), then per element an i32 length (−1: NULL)
//! and its bytes. An empty array has 0 dimensions and nothing after the OID, as `array_send`
//! sends it. `engine`'s round-trip test COPYs every one of these into a real server and reads
//! them back.
//!
//! Lengths: a field or array longer than `i32::MAX` bytes cannot be represented; its length is
//! then written as `i32::MAX`, which the server rejects (the stream ends before that many bytes),
//! so the COPY fails instead of storing a wrong value. PostgreSQL's own limit (1 GB per field)
//! is far below.

use std::io::Write;

use postgres::CopyInWriter;
use postgres::types::Type;

/// The encoded bytes handed to the driver at once: the buffer is sent when a row would start
/// past this size, so it holds at most this plus one row.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The 11-byte signature that starts a binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A binary COPY encoder over its own buffer. Reuse one across COPYs ([`BinaryCopyIn::new`]
/// clears it): its capacity stays allocated.
///
/// Field methods append one field each and return `self` for chaining; start each row with
/// [`CopyEncoder::row`] giving its field count, then write exactly that many fields (in debug
/// builds the count is checked when the next row starts and at the trailer).
#[derive(Debug, Default)]
pub struct CopyEncoder {
    buf: Vec<u8>,
    /// Fields declared for the current row minus those written.
    #[cfg(debug_assertions)]
    fields_left: i32,
}

impl CopyEncoder {
    /// An empty encoder.
    pub fn new() -> CopyEncoder {
        CopyEncoder::default()
    }

    /// The bytes encoded and not yet taken.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets the encoded bytes, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.set_fields_left(0);
    }

    /// Appends the file header.
    pub fn header(&mut self) {
        self.buf.extend_from_slice(SIGNATURE);
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        self.buf.extend_from_slice(&0i32.to_be_bytes());
    }

    /// Starts a tuple of `fields` fields.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.check_row_complete();
        self.set_fields_left(i32::from(fields));
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    /// Appends the file trailer.
    pub fn trailer(&mut self) {
        self.check_row_complete();
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
    }

    /// A NULL field.
    pub fn null(&mut self) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    /// An `int2` field.
    pub fn i16(&mut self, value: i16) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(&2i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// An `int4` field.
    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// An `int8` field.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// A `bool` field.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(&1i32.to_be_bytes());
        self.buf.push(u8::from(value));
        self
    }

    /// A `text` (or `varchar`) field.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.bytea(value.as_bytes())
    }

    /// A `bytea` field.
    pub fn bytea(&mut self, value: &[u8]) -> &mut Self {
        self.field();
        self.buf.extend_from_slice(&len_i32(value.len()).to_be_bytes());
        self.buf.extend_from_slice(value);
        self
    }

    /// An `int8` field or NULL.
    pub fn opt_i64(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }

    /// A `bool` field or NULL.
    pub fn opt_bool(&mut self, value: Option<bool>) -> &mut Self {
        match value {
            Some(v) => self.bool(v),
            None => self.null(),
        }
    }

    /// A `text` field or NULL.
    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// An `int8[]` field (one dimension, no NULL element).
    pub fn i64_array(&mut self, values: impl ExactSizeIterator<Item = i64>) -> &mut Self {
        let at = self.array_start(Type::INT8, values.len());
        for v in values {
            self.buf.extend_from_slice(&8i32.to_be_bytes());
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
        self.array_end(at)
    }

    /// A `text[]` field (one dimension, no NULL element).
    pub fn text_array<'s>(&mut self, values: impl ExactSizeIterator<Item = &'s str>) -> &mut Self {
        let at = self.array_start(Type::TEXT, values.len());
        for v in values {
            self.buf.extend_from_slice(&len_i32(v.len()).to_be_bytes());
            self.buf.extend_from_slice(v.as_bytes());
        }
        self.array_end(at)
    }

    /// Writes an array's header after a length placeholder; returns the placeholder's offset.
    fn array_start(&mut self, element: Type, len: usize) -> usize {
        self.field();
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        let ndim: i32 = if len == 0 { 0 } else { 1 };
        self.buf.extend_from_slice(&ndim.to_be_bytes());
        self.buf.extend_from_slice(&0i32.to_be_bytes()); // has-null flag
        self.buf.extend_from_slice(&element.oid().to_be_bytes());
        if len > 0 {
            self.buf.extend_from_slice(&len_i32(len).to_be_bytes());
            self.buf.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        }
        at
    }

    /// Fills in the array's byte length (everything after the placeholder).
    fn array_end(&mut self, at: usize) -> &mut Self {
        let len = len_i32(self.buf.len() - at - 4).to_be_bytes();
        self.buf[at..at + 4].copy_from_slice(&len);
        self
    }

    #[cfg(debug_assertions)]
    fn field(&mut self) {
        self.fields_left -= 1;
        debug_assert!(self.fields_left >= 0, "more fields written than the row declared");
    }

    #[cfg(not(debug_assertions))]
    fn field(&mut self) {}

    #[cfg(debug_assertions)]
    fn set_fields_left(&mut self, fields: i32) {
        self.fields_left = fields;
    }

    #[cfg(not(debug_assertions))]
    fn set_fields_left(&mut self, _fields: i32) {}

    #[cfg(debug_assertions)]
    fn check_row_complete(&self) {
        debug_assert_eq!(self.fields_left, 0, "fewer fields written than the row declared");
    }

    #[cfg(not(debug_assertions))]
    fn check_row_complete(&self) {}
}

/// A byte length as the format's i32 (see the module note for lengths past `i32::MAX`).
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// One binary COPY in progress: rows are encoded into a [`CopyEncoder`] and handed to the
/// driver [`CHUNK_BYTES`] at a time.
///
/// ```ignore
/// let mut encoder = CopyEncoder::new();
/// let mut copy = BinaryCopyIn::new(tx.copy_in("COPY t (a, b) FROM STDIN (FORMAT binary)")?, &mut encoder);
/// for (a, b) in rows {
///     copy.row(2)?.i64(a).opt_text(b);
/// }
/// copy.finish()?;
/// ```
///
/// Dropped without [`BinaryCopyIn::finish`], the COPY is aborted (the driver's rule).
pub struct BinaryCopyIn<'a, 'e> {
    writer: CopyInWriter<'a>,
    encoder: &'e mut CopyEncoder,
}

impl std::fmt::Debug for BinaryCopyIn<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryCopyIn").field("buffered", &self.encoder.buf.len()).finish()
    }
}

impl<'a, 'e> BinaryCopyIn<'a, 'e> {
    /// Starts the stream on `writer` (from `copy_in` of a `COPY … FROM STDIN (FORMAT binary)`
    /// statement), encoding into `encoder` (cleared first).
    pub fn new(writer: CopyInWriter<'a>, encoder: &'e mut CopyEncoder) -> Self {
        encoder.clear();
        encoder.header();
        BinaryCopyIn { writer, encoder }
    }

    /// Starts a row of `fields` fields, first sending the buffer when it holds
    /// [`CHUNK_BYTES`]; write the fields on the returned encoder.
    pub fn row(&mut self, fields: i16) -> Result<&mut CopyEncoder, postgres::Error> {
        if self.encoder.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(self.encoder.row(fields))
    }

    /// Sends the rest and the trailer, and ends the COPY. Returns the rows the server copied.
    pub fn finish(mut self) -> Result<u64, postgres::Error> {
        self.encoder.trailer();
        self.send()?;
        self.writer.finish()
    }

    fn send(&mut self) -> Result<(), postgres::Error> {
        // `CopyInWriter` keeps what it is given and sends it on its next write or flush; the
        // flush makes this chunk one message now, leaving its own buffer empty.
        let sent = self.writer.write_all(&self.encoder.buf).and_then(|()| self.writer.flush());
        self.encoder.buf.clear();
        sent.map_err(into_postgres)
    }
}

/// The driver's error back out of `CopyInWriter`'s `std::io::Write` face.
fn into_postgres(error: std::io::Error) -> postgres::Error {
    match error.into_inner().map(|inner| inner.downcast::<postgres::Error>()) {
        Some(Ok(error)) => *error,
        // postgres 0.19's CopyInWriter fails only when sending, with the driver's own error
        // wrapped by `io::Error::other`; it has no other source of I/O errors.
        other => unreachable!("CopyInWriter failed with a non-driver error: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(v: i32) -> [u8; 4] {
        v.to_be_bytes()
    }

    #[test]
    fn header_and_trailer() {
        let mut e = CopyEncoder::new();
        e.header();
        e.trailer();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(e.as_bytes(), &expected[..]);
    }

    #[test]
    fn scalar_fields() {
        let mut e = CopyEncoder::new();
        e.row(8)
            .i16(-2)
            .i32(0x0102_0304)
            .i64(i64::MIN)
            .bool(true)
            .bool(false)
            .text("é")
            .bytea(&[0, 0xff])
            .null();
        let mut expected = vec![0, 8];
        expected.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 0, 0, 4, 1, 2, 3, 4]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 1, 1, 0, 0, 0, 1, 0]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xc3, 0xa9]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 0xff]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(e.as_bytes(), &expected[..]);
    }

    #[test]
    fn options() {
        let mut e = CopyEncoder::new();
        e.row(6).opt_i64(Some(1)).opt_i64(None).opt_bool(Some(true)).opt_bool(None);
        e.opt_text(Some("")).opt_text(None);
        let mut expected = vec![0, 6];
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&be32(-1));
        expected.extend_from_slice(&[0, 0, 0, 1, 1]);
        expected.extend_from_slice(&be32(-1));
        expected.extend_from_slice(&be32(0));
        expected.extend_from_slice(&be32(-1));
        assert_eq!(e.as_bytes(), &expected[..]);
    }

    #[test]
    fn arrays() {
        let mut e = CopyEncoder::new();
        e.row(4)
            .i64_array([7i64, -1].into_iter())
            .i64_array(std::iter::empty())
            .text_array(["a", "bc"].into_iter())
            .text_array(std::iter::empty());
        let mut expected = vec![0, 4];
        // int8[] {7, -1}: 20 header bytes + 2 × 12.
        expected.extend_from_slice(&be32(44));
        for v in [1, 0, 20, 2, 1, 8] {
            expected.extend_from_slice(&be32(v));
        }
        expected.extend_from_slice(&7i64.to_be_bytes());
        expected.extend_from_slice(&be32(8));
        expected.extend_from_slice(&(-1i64).to_be_bytes());
        // int8[] {}: no dimension.
        for v in [12, 0, 0, 20] {
            expected.extend_from_slice(&be32(v));
        }
        // text[] {a, bc}: 20 + 5 + 6.
        for v in [31, 1, 0, 25, 2, 1, 1] {
            expected.extend_from_slice(&be32(v));
        }
        expected.push(b'a');
        expected.extend_from_slice(&be32(2));
        expected.extend_from_slice(b"bc");
        for v in [12, 0, 0, 25] {
            expected.extend_from_slice(&be32(v));
        }
        assert_eq!(e.as_bytes(), &expected[..]);
    }

    /// One row of the round-trip table: every column type the COPY writers use, all nullable.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        id: i64,
        a: Option<i16>,
        b: Option<i32>,
        c: Option<i64>,
        d: Option<bool>,
        e: Option<String>,
        f: Option<Vec<u8>>,
        g: Option<Vec<i64>>,
        h: Option<Vec<String>>,
    }

    fn sample(i: i64) -> Sample {
        let texts = ["", "KXBTC-25DEC31-T100000", "é", "日本語の市場", "emoji 🦀 ok", "a\tb\nc\\"];
        let pick = |k: i64| texts[usize::try_from(k.rem_euclid(6)).unwrap_or(0)].to_owned();
        let extremes = [i64::MIN, i64::MAX, 0, -1, 1];
        let c = extremes[usize::try_from(i.rem_euclid(5)).unwrap_or(0)];
        Sample {
            id: i,
            a: (i % 7 != 0).then_some(if i % 2 == 0 { i16::MIN } else { i16::MAX }),
            b: (i % 11 != 0).then_some(if i % 2 == 0 { i32::MIN } else { i32::MAX }),
            c: (i % 13 != 0).then_some(c),
            d: (i % 3 != 0).then_some(i % 2 == 0),
            e: (i % 17 != 0).then(|| pick(i)),
            f: (i % 19 != 0)
                .then(|| (0..i % 40).map(|k| u8::try_from(k * 7 % 256).unwrap_or(0)).collect()),
            g: (i % 23 != 0).then(|| (0..i % 9).map(|k| if k % 2 == 0 { c } else { k }).collect()),
            h: (i % 29 != 0).then(|| (0..i % 5).map(|k| pick(i + k)).collect()),
        }
    }

    fn encode(copy: &mut BinaryCopyIn<'_, '_>, s: &Sample) -> Result<(), postgres::Error> {
        let r = copy.row(9)?;
        r.i64(s.id);
        match s.a {
            Some(v) => r.i16(v),
            None => r.null(),
        };
        match s.b {
            Some(v) => r.i32(v),
            None => r.null(),
        };
        r.opt_i64(s.c).opt_bool(s.d).opt_text(s.e.as_deref());
        match &s.f {
            Some(v) => r.bytea(v),
            None => r.null(),
        };
        match &s.g {
            Some(v) => r.i64_array(v.iter().copied()),
            None => r.null(),
        };
        match &s.h {
            Some(v) => r.text_array(v.iter().map(String::as_str)),
            None => r.null(),
        };
        Ok(())
    }

    /// Enough rows that the stream crosses several chunk boundaries.
    const ROUND_TRIP_ROWS: i64 = 20_000;

    #[test]
    fn round_trips_every_type_through_postgres() -> Result<(), Box<dyn std::error::Error>> {
        let db = crate::pg::testing::TestDatabase::new()?;
        let mut client = db.connect()?;
        client.batch_execute(
            "CREATE TABLE sample (id bigint PRIMARY KEY, a smallint, b integer, c bigint, \
             d boolean, e text, f bytea, g bigint[], h text[])",
        )?;
        let rows: Vec<Sample> = (0..ROUND_TRIP_ROWS).map(sample).collect();
        let mut encoder = CopyEncoder::new();
        let mut tx = client.transaction()?;
        let mut copy = BinaryCopyIn::new(
            tx.copy_in("COPY sample (id, a, b, c, d, e, f, g, h) FROM STDIN (FORMAT binary)")?,
            &mut encoder,
        );
        for s in &rows {
            encode(&mut copy, s)?;
        }
        assert_eq!(copy.finish()?, u64::try_from(rows.len())?);
        tx.commit()?;
        assert!(encoder.buf.capacity() >= CHUNK_BYTES, "the stream was sent in chunks");

        let back: Vec<Sample> = client
            .query("SELECT id, a, b, c, d, e, f, g, h FROM sample ORDER BY id", &[])?
            .iter()
            .map(|row| Sample {
                id: row.get(0),
                a: row.get(1),
                b: row.get(2),
                c: row.get(3),
                d: row.get(4),
                e: row.get(5),
                f: row.get(6),
                g: row.get(7),
                h: row.get(8),
            })
            .collect();
        assert_eq!(back.len(), rows.len());
        for (got, want) in back.iter().zip(&rows) {
            assert_eq!(got, want);
        }
        // Empty arrays are PostgreSQL's empty array (what `'{}'` gives), not a 1-D array of 0.
        let (empty_g, same): (i64, bool) = {
            let row = client.query_one(
                "SELECT count(*), bool_and(g = '{}'::bigint[] AND array_ndims(g) IS NULL) \
                 FROM sample WHERE cardinality(g) = 0",
                &[],
            )?;
            (row.get(0), row.get(1))
        };
        assert!(empty_g > 0 && same, "{empty_g} empty int8[] read back as '{{}}': {same}");
        let nulls: i64 = client
            .query_one(
                "SELECT count(*) FILTER (WHERE a IS NULL) + count(*) FILTER (WHERE h IS NULL) \
                 FROM sample",
                &[],
            )?
            .get(0);
        assert!(nulls > 0);
        Ok(())
    }

    #[test]
    fn server_errors_come_back_as_driver_errors() -> Result<(), Box<dyn std::error::Error>> {
        let db = crate::pg::testing::TestDatabase::new()?;
        let mut client = db.connect()?;
        client.batch_execute("CREATE TABLE k (id bigint PRIMARY KEY)")?;
        let mut encoder = CopyEncoder::new();
        let mut tx = client.transaction()?;
        let mut copy =
            BinaryCopyIn::new(tx.copy_in("COPY k (id) FROM STDIN (FORMAT binary)")?, &mut encoder);
        // Far more than one chunk, the duplicate first: the error may surface mid-stream.
        let sent = (|| {
            for i in 0..100_000i64 {
                copy.row(1)?.i64(if i == 1 { 0 } else { i });
            }
            copy.finish()
        })();
        let error = sent.err().ok_or("a duplicate key was accepted")?;
        assert_eq!(error.code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION), "{error:?}");
        Ok(())
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "fewer fields")]
    fn short_row_is_caught_in_debug() {
        let mut e = CopyEncoder::new();
        e.row(2).i64(1);
        e.trailer();
    }
}

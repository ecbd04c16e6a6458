-- Gatherer buffer, version 1: append-only tables, one row per received record, keyed by gseq.
--
-- gseq is assigned by the gatherer's single writer thread from ONE sequence shared by every
-- table, strictly increasing, without holes (a batch reuses its gseqs when retried). Batches
-- commit in gseq order, so a reader that saw gseq N has seen every row below N in every table.
-- `batch` logs each committed batch: its last_gseq is the high-water mark readers and the
-- writer (on restart) resume from.
--
-- Units (DESIGN §5): times are bigint ns since the Unix epoch (`ts_recv_ns` = our receive
-- time, `ts_exch_ns` = the exchange's time at its full precision); prices are bigint
-- micro-dollars; sizes and counts are bigint hundredths of a contract; sides are booleans
-- (`*_yes`: true = YES, false = NO). conn_id, sid, seq and clock are unsigned 64-bit on the
-- wire and stored bit for bit in bigint (values of 2^63 and above would read back negative).
-- conn_id numbers the gatherer's WebSocket connections; (conn_id, sid, seq) places a record in
-- its connection's stream and is never part of an event's identity.

CREATE TABLE batch (
    last_gseq    bigint      PRIMARY KEY,
    first_gseq   bigint      NOT NULL,
    rows         integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    CHECK (first_gseq >= 1 AND last_gseq >= first_gseq AND rows = last_gseq - first_gseq + 1)
);

CREATE TABLE delta (
    gseq            bigint  PRIMARY KEY,
    ts_recv_ns      bigint  NOT NULL,
    conn_id         bigint  NOT NULL,
    sid             bigint,
    seq             bigint,
    market          text    NOT NULL,
    side_yes        boolean NOT NULL,
    price_micros    bigint  NOT NULL,
    delta_centi     bigint  NOT NULL,
    ts_exch_ns      bigint  NOT NULL,
    client_order_id text
);

CREATE TABLE trade (
    gseq                bigint  PRIMARY KEY,
    ts_recv_ns          bigint  NOT NULL,
    conn_id             bigint  NOT NULL,
    sid                 bigint,
    seq                 bigint,
    trade_id            text    NOT NULL,
    market              text    NOT NULL,
    yes_price_micros    bigint  NOT NULL,
    no_price_micros     bigint  NOT NULL,
    count_centi         bigint  NOT NULL,
    taker_side_yes      boolean,
    taker_book_side_ask boolean,
    is_block_trade      boolean,
    ts_exch_ns          bigint  NOT NULL
);

CREATE TABLE ticker (
    gseq                  bigint PRIMARY KEY,
    ts_recv_ns            bigint NOT NULL,
    conn_id               bigint NOT NULL,
    sid                   bigint,
    seq                   bigint,
    market                text   NOT NULL,
    price_micros          bigint,
    yes_bid_micros        bigint,
    yes_ask_micros        bigint,
    yes_bid_size_centi    bigint,
    yes_ask_size_centi    bigint,
    last_trade_size_centi bigint,
    volume_centi          bigint,
    open_interest_centi   bigint,
    dollar_volume         bigint,
    dollar_open_interest  bigint,
    clock                 bigint,
    ts_exch_ns            bigint NOT NULL
);

-- A book state, not an event. Its anchor in the delta stream: a WebSocket snapshot applies
-- just before the deltas that follow it on its (conn_id, sid), i.e. those with a greater seq
-- (and a greater gseq); a REST snapshot (source 'rest', conn_id/sid/seq NULL) has no sequence
-- on the wire, so its anchor is its gseq: the deltas of the market written after it.
CREATE TABLE snapshot (
    gseq            bigint   PRIMARY KEY,
    ts_recv_ns      bigint   NOT NULL,
    source          text     NOT NULL CHECK (source IN ('ws', 'rest')),
    conn_id         bigint,
    sid             bigint,
    seq             bigint,
    market          text     NOT NULL,
    yes_price_micros bigint[] NOT NULL,
    yes_size_centi   bigint[] NOT NULL,
    no_price_micros  bigint[] NOT NULL,
    no_size_centi    bigint[] NOT NULL,
    CHECK ((source = 'ws') = (conn_id IS NOT NULL)),
    CHECK (cardinality(yes_price_micros) = cardinality(yes_size_centi)),
    CHECK (cardinality(no_price_micros) = cardinality(no_size_centi))
);

CREATE TABLE market_lifecycle (
    gseq                    bigint  PRIMARY KEY,
    ts_recv_ns              bigint  NOT NULL,
    conn_id                 bigint  NOT NULL,
    sid                     bigint,
    seq                     bigint,
    market                  text    NOT NULL,
    kind                    text    NOT NULL,
    multivariate            boolean NOT NULL,
    open_ts_s               bigint,
    close_ts_s              bigint,
    determination_ts_s      bigint,
    settled_ts_s            bigint,
    result                  text,
    settlement_value_micros bigint,
    price_level_structure   text,
    payload                 text    NOT NULL
);

CREATE TABLE event_lifecycle (
    gseq         bigint PRIMARY KEY,
    ts_recv_ns   bigint NOT NULL,
    conn_id      bigint NOT NULL,
    sid          bigint,
    seq          bigint,
    event_ticker text   NOT NULL,
    payload      text   NOT NULL
);

-- Some market on (conn_id, sid) may have lost something: the sid's seq jumped from
-- expected_seq - 1 to got_seq, or (got_seq NULL) the stream ended before expected_seq arrived.
-- Coverage of `markets` is unknown from ts_recv_last_good_ns (receive time of the last frame in
-- sequence) until the resync that follows; ts_recv_ns is when the gap was seen.
CREATE TABLE gap (
    gseq                 bigint PRIMARY KEY,
    ts_recv_ns           bigint NOT NULL,
    conn_id              bigint NOT NULL,
    sid                  bigint NOT NULL,
    expected_seq         bigint NOT NULL,
    got_seq              bigint,
    ts_recv_last_good_ns bigint,
    markets              text[] NOT NULL
);

-- A frame that did not parse (malformed = true, reason = the parse error) or whose message
-- type this build does not know (malformed = false), kept byte for byte.
CREATE TABLE raw_frame (
    gseq       bigint  PRIMARY KEY,
    ts_recv_ns bigint  NOT NULL,
    conn_id    bigint  NOT NULL,
    malformed  boolean NOT NULL,
    reason     text    NOT NULL,
    frame      bytea   NOT NULL
);

-- Production, version 1: the merged history (DESIGN §4, §5) and the deduplicator's cursors.
--
-- Units as in the gatherer buffer: times bigint ns since the Unix epoch (ts_exch_ns = the
-- exchange's time at full precision, ts_recv_ns = receive time at the gatherer that delivered
-- the row first), prices bigint micro-dollars, sizes bigint hundredths of a contract, sides
-- booleans (true = YES). u64 values (conn_id, sid, seq, clock) are stored bit for bit in bigint.
-- `gatherer` (0..7) is the gatherer that delivered the row first (provenance, not identity).
--
-- The unique constraints implement the identities of DESIGN §4 and are the backstop behind the
-- merge core, which writes only rows it knows are new: exact column equality everywhere except
-- lifecycle payloads, which are too long for a btree entry and are compared by SHA-256 (a
-- collision needs 2^128 payloads; the merge core itself compares payloads in full). Key
-- columns lead with the exchange time so inserts append to the right of the index.

CREATE TABLE delta (
    ts_exch_ns      bigint   NOT NULL,
    market          text     NOT NULL,
    side_yes        boolean  NOT NULL,
    price_micros    bigint   NOT NULL,
    delta_centi     bigint   NOT NULL,
    -- Ordinal among identical (market, ts_exch_ns, side, price, change) deltas: 0, 1, 2, ...
    occ             integer  NOT NULL CHECK (occ >= 0),
    ts_recv_ns      bigint   NOT NULL,
    gatherer        smallint NOT NULL,
    -- Account-specific (set on the delivering account's own orders): never identity.
    client_order_id text,
    PRIMARY KEY (ts_exch_ns, market, side_yes, price_micros, delta_centi, occ)
);

-- trade_id is the identity; every gatherer parses a trade's time from the same bytes with the
-- same rule, so ts_exch_ns is a function of trade_id and leading with it only orders the index.
CREATE TABLE trade (
    ts_exch_ns          bigint   NOT NULL,
    trade_id            text     NOT NULL,
    market              text     NOT NULL,
    yes_price_micros    bigint   NOT NULL,
    no_price_micros     bigint   NOT NULL,
    count_centi         bigint   NOT NULL,
    taker_side_yes      boolean,
    taker_book_side_ask boolean,
    is_block_trade      boolean,
    ts_recv_ns          bigint   NOT NULL,
    gatherer            smallint NOT NULL,
    PRIMARY KEY (ts_exch_ns, trade_id)
);

-- Identity: (market, ts_exch_ns, every content column, occ). NULLS NOT DISTINCT: an absent
-- field is a value like any other.
CREATE TABLE ticker (
    ts_exch_ns            bigint   NOT NULL,
    market                text     NOT NULL,
    occ                   integer  NOT NULL CHECK (occ >= 0),
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
    ts_recv_ns            bigint   NOT NULL,
    gatherer              smallint NOT NULL,
    CONSTRAINT ticker_identity UNIQUE NULLS NOT DISTINCT (
        ts_exch_ns, market, occ, price_micros, yes_bid_micros, yes_ask_micros,
        yes_bid_size_centi, yes_ask_size_centi, last_trade_size_centi, volume_centi,
        open_interest_centi, dollar_volume, dollar_open_interest, clock)
);

-- Identity: (market, kind, payload); the event's times (open/close/determination/settled) are
-- inside the payload. Rare rows: no time-first ordering needed.
CREATE TABLE market_lifecycle (
    market                  text     NOT NULL,
    kind                    text     NOT NULL,
    payload_sha256          bytea    NOT NULL CHECK (length(payload_sha256) = 32),
    multivariate            boolean  NOT NULL,
    open_ts_s               bigint,
    close_ts_s              bigint,
    determination_ts_s      bigint,
    settled_ts_s            bigint,
    result                  text,
    settlement_value_micros bigint,
    price_level_structure   text,
    payload                 text     NOT NULL,
    ts_recv_ns              bigint   NOT NULL,
    gatherer                smallint NOT NULL,
    PRIMARY KEY (market, kind, payload_sha256)
);

CREATE TABLE event_lifecycle (
    event_ticker   text     NOT NULL,
    payload_sha256 bytea    NOT NULL CHECK (length(payload_sha256) = 32),
    payload        text     NOT NULL,
    ts_recv_ns     bigint   NOT NULL,
    gatherer       smallint NOT NULL,
    PRIMARY KEY (event_ticker, payload_sha256)
);

-- Book states, kept per source gatherer with their anchor (not merged across gatherers): a
-- WebSocket snapshot applies just before the deltas that followed it on its (conn_id, sid) in
-- that gatherer; a REST one (conn_id/sid/seq NULL) before the market's deltas with a greater
-- gseq in that gatherer.
CREATE TABLE snapshot (
    gatherer         smallint NOT NULL,
    gseq             bigint   NOT NULL,
    ts_recv_ns       bigint   NOT NULL,
    source           text     NOT NULL CHECK (source IN ('ws', 'rest')),
    conn_id          bigint,
    sid              bigint,
    seq              bigint,
    market           text     NOT NULL,
    yes_price_micros bigint[] NOT NULL,
    yes_size_centi   bigint[] NOT NULL,
    no_price_micros  bigint[] NOT NULL,
    no_size_centi    bigint[] NOT NULL,
    PRIMARY KEY (gatherer, gseq),
    CHECK ((source = 'ws') = (conn_id IS NOT NULL))
);

-- Every gatherer's gap markers, as the gatherer stored them: input of the coverage ledger.
CREATE TABLE gatherer_gap (
    gatherer             smallint NOT NULL,
    gseq                 bigint   NOT NULL,
    ts_recv_ns           bigint   NOT NULL,
    conn_id              bigint   NOT NULL,
    sid                  bigint   NOT NULL,
    expected_seq         bigint   NOT NULL,
    got_seq              bigint,
    ts_recv_last_good_ns bigint,
    markets              text[]   NOT NULL,
    PRIMARY KEY (gatherer, gseq)
);

-- Intervals of one market in which no gatherer had unbroken coverage (DESIGN §4 invariant 5).
-- Written by the coverage ledger (issue 5, part 4); empty until then.
CREATE TABLE coverage_gap (
    ts_from_ns bigint NOT NULL,
    ts_to_ns   bigint NOT NULL,
    market     text   NOT NULL,
    PRIMARY KEY (ts_from_ns, market),
    CHECK (ts_to_ns >= ts_from_ns)
);

-- How far each gatherer's stream is merged: every row with gseq <= gseq is decided (in
-- production, or a duplicate of a row in production). Updated in the transaction that writes the
-- rows, so rows and cursor commit together.
CREATE TABLE dedup_cursor (
    gatherer   smallint    PRIMARY KEY CHECK (gatherer BETWEEN 0 AND 7),
    gseq       bigint      NOT NULL CHECK (gseq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

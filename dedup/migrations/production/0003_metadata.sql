-- Production, version 3: exchange metadata from REST (issue 5 item 5, dedup/src/metadata.rs).
--
-- One row per series, event and market, upserted by the metadata sync: latest wins. `body` is
-- the whole JSON object as Kalshi sent it (nothing is lost when Kalshi adds fields); the other
-- columns are its keys and the fields operators filter on, extracted at write time. Times from
-- Kalshi are bigint ns since the Unix epoch, as in every other production table (NULL when
-- absent or not RFC 3339). `updated_at` is when kdp last changed the row: a sync that finds the
-- same body (and the same series for a market) leaves the row untouched.
--
-- Rows are never deleted: a market Kalshi moves to its historical endpoints stays here with the
-- last state seen.

CREATE TABLE series (
    ticker      text        PRIMARY KEY,
    title       text,
    category    text,
    frequency   text,
    body        jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE events (
    event_ticker  text        PRIMARY KEY,
    series_ticker text,
    title         text,
    sub_title     text,
    body          jsonb       NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX events_series ON events (series_ticker);

CREATE TABLE markets (
    ticker            text        PRIMARY KEY,
    event_ticker      text        NOT NULL,
    -- From the market's event (markets do not carry it); NULL until the event is synced.
    series_ticker     text,
    -- Kalshi's status vocabulary: initialized, inactive, active, closed, determined, disputed,
    -- amended, finalized.
    status            text        NOT NULL,
    title             text,
    open_time_ns      bigint,
    close_time_ns     bigint,
    -- Kalshi's `updated_time`.
    kalshi_updated_ns bigint,
    body              jsonb       NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX markets_event ON markets (event_ticker);
CREATE INDEX markets_status ON markets (status);

-- Production, version 2: the coverage ledger (DESIGN §3 "Coverage ledger", §4 invariant 5).
-- Written by the deduplicator in the transaction of the batch the rows come from
-- (`Sink::write_with_ledger`), so the ledger never disagrees with the merged history.
-- Times are exchange times, ns. Market '' means every market (a gap marker with an empty
-- market list: every market of that gatherer).

-- Events per market per minute per gatherer: how many the gatherer delivered (first deliveries
-- and duplicates of other gatherers' deliveries) and how many of those were merged into
-- production because it delivered them first. Added to by every batch.
CREATE TABLE coverage_minute (
    minute_ns bigint   NOT NULL CHECK (minute_ns % 60000000000 = 0),
    market    text     NOT NULL,
    gatherer  smallint NOT NULL CHECK (gatherer BETWEEN 0 AND 7),
    delivered bigint   NOT NULL CHECK (delivered >= 0),
    merged    bigint   NOT NULL CHECK (merged >= 0 AND merged <= delivered),
    PRIMARY KEY (minute_ns, market, gatherer)
);

-- Where one gatherer had no coverage of a market, one row per gap marker (gap_gseq, its gseq
-- in that gatherer) and market: from the marker's last good receive time, until it was seen
-- (seq, disconnect) or until the market's next snapshot (subscription lost, restart, crash;
-- ts_to_ns NULL while none came). A market's own row replaces the '' row of the same marker.
-- Minutes a gatherer covered without a break are those no row of it overlaps.
CREATE TABLE gatherer_uncovered (
    gatherer   smallint NOT NULL CHECK (gatherer BETWEEN 0 AND 7),
    gap_gseq   bigint   NOT NULL,
    market     text     NOT NULL,
    ts_from_ns bigint   NOT NULL,
    ts_to_ns   bigint,
    PRIMARY KEY (gatherer, gap_gseq, market),
    CHECK (ts_to_ns >= ts_from_ns)
);
CREATE INDEX gatherer_uncovered_market ON gatherer_uncovered (market, ts_from_ns);

-- coverage_gap (version 1's placeholder): the intervals in which no gatherer had coverage of
-- a market ('' = of every market). An interval still open (some gatherer's gap not yet closed by
-- a snapshot) has ts_to_ns NULL; the ledger replaces a market's recent rows as it learns more.
ALTER TABLE coverage_gap ALTER COLUMN ts_to_ns DROP NOT NULL;
CREATE INDEX coverage_gap_market ON coverage_gap (market, ts_from_ns);

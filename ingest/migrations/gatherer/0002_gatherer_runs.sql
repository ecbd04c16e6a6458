-- Gatherer buffer, version 2: writer runs, per-connection progress, and a kind on every gap row.
--
-- A gatherer that is not running listens to nothing. So every start of the writer against a
-- database that already holds a history records a gap row for the time it was away (kind
-- 'restart' after a clean stop, 'crash' otherwise), and every run leaves enough behind to say
-- where that gap begins even when the process was killed.

-- One row per start of the writer. run_id orders the runs (identity, not wall-clock time);
-- token is the writer's own key for its row, so a start whose COMMIT answer was lost is not
-- recorded twice. first_gseq: the run's first row (its restart gap when it wrote one). A clean
-- stop (every buffered row committed, then this row updated in the last transaction) sets
-- stopped_ns and last_gseq; a run that still has them NULL when the next one starts ended in
-- a crash (SIGKILL, power loss, panic) and may have lost its uncommitted tail.
CREATE TABLE run (
    run_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token      bigint NOT NULL UNIQUE,
    started_ns bigint NOT NULL,
    first_gseq bigint NOT NULL CHECK (first_gseq >= 1),
    stopped_ns bigint,
    last_gseq  bigint,
    CHECK ((stopped_ns IS NULL) = (last_gseq IS NULL))
);

-- Where each WebSocket connection of a run had got to in the database: the gseq and receive
-- time of its last committed row (snapshots from REST belong to no connection). A connection's
-- records travel one ring in receive order and commit in gseq order, so the rows of a
-- connection in the database are always a prefix of what it received: after a crash it lost at
-- most the frames received after last_recv_ns. Written in the transaction of the first batch
-- holding the connection, then at most once a second and at a clean stop, so a value may lag
-- the truth by up to a second, never lead it: a restart gap that starts from it starts early,
-- never late.
CREATE TABLE run_conn (
    run_id       bigint NOT NULL REFERENCES run (run_id),
    conn_id      bigint NOT NULL,
    last_gseq    bigint NOT NULL,
    last_recv_ns bigint NOT NULL,
    PRIMARY KEY (run_id, conn_id)
);

-- What a gap row records, spelled out (version 1 told them apart by their shape, which the
-- existing rows keep):
--   'seq'               the sid's seq jumped (got_seq set), or its stream ended before
--                       expected_seq arrived (got_seq NULL, expected_seq >= 1);
--   'subscription_lost' the server dropped the subscription (error 10/25): expected_seq 0;
--   'disconnect'        the connection dropped: sid 0, every market of the connection;
--   'restart'           the gatherer was stopped cleanly and started again;
--   'crash'             the gatherer's previous run ended without a clean stop.
-- The two run kinds have conn_id 0 (connections are numbered from 1), sid 0, expected_seq 0,
-- got_seq NULL; ts_recv_last_good_ns is the earliest last_recv_ns of the previous run's
-- connections (its start when it committed none; NULL for a database written before version
-- 2, where nothing says), ts_recv_ns the new run's start, and markets the markets the new run
-- captures ('{}' when the writer was not told them: every market of this gatherer). Coverage
-- is unknown from ts_recv_last_good_ns until each market's first snapshot after the gap.
ALTER TABLE gap ADD COLUMN kind text NOT NULL DEFAULT 'seq'
    CHECK (kind IN ('seq', 'subscription_lost', 'disconnect', 'restart', 'crash'));
UPDATE gap SET kind = CASE
    WHEN sid = 0 THEN 'disconnect'
    WHEN expected_seq = 0 AND got_seq IS NULL THEN 'subscription_lost'
    ELSE 'seq'
END;
ALTER TABLE gap ALTER COLUMN kind DROP DEFAULT;

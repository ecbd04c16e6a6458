-- Production, version 4: least-privilege group roles (deploy/RUNBOOK.md section 2).
--
-- Two NOLOGIN group roles; operators create the LOGIN users and GRANT them one of these:
--   kdp_dedup   the deduplicator: its sink (dedup/src/sink.rs), coverage ledger (same
--               transaction) and metadata sync (dedup/src/metadata.rs). Appends merged rows,
--               moves its cursors, maintains the ledger and the metadata; never rewrites or
--               removes merged history.
--   kdp_reader  researchers and `kdp book` / `kdp trades` / `kdp coverage`: SELECT only.
-- The tables stay owned by the role that applies the migrations (the database owner); neither
-- group role may create, alter, drop or truncate a table.
--
-- Roles are cluster-wide while migrations run per database, and several databases of one cluster
-- may migrate at once (many test databases in parallel). So each role is created only if missing,
-- and a concurrent CREATE ROLE of the same name (duplicate_object, or unique_violation from the
-- catalog index when the two race) counts as success. The existence check comes first because
-- CREATE ROLE checks the CREATEROLE privilege before the name: a migrating owner without
-- CREATEROLE succeeds when an administrator created the roles beforehand (deploy/RUNBOOK.md
-- section 2). Grants below are per database and idempotent.

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kdp_dedup') THEN
        CREATE ROLE kdp_dedup NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kdp_reader') THEN
        CREATE ROLE kdp_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Nobody but the owner creates objects in public. PostgreSQL 15 and later already leave PUBLIC
-- without CREATE on schema public; older clusters and restored dumps may not, so say it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- CONNECT is granted explicitly so an operator may `REVOKE ALL ON DATABASE ... FROM PUBLIC`
-- without locking the roles out. TEMPORARY (kdp_dedup only): a batch that meets rows already
-- in production goes through session-local staging tables (`CREATE TEMP TABLE stage_* (LIKE
-- ...)`, sink.rs); temporary tables live in the session's own pg_temp schema, not in public.
DO $$ BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO kdp_dedup, kdp_reader',
                   current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO kdp_dedup', current_database());
END $$;
GRANT USAGE ON SCHEMA public TO kdp_dedup, kdp_reader;

-- Merged history. INSERT: the sink COPYs each batch into these tables, or, through staging,
-- `INSERT ... SELECT ... ON CONFLICT DO NOTHING`. SELECT: a restart rebuilds the seen-key index
-- from the recent rows, ON CONFLICT reads the conflicting keys, and `LIKE` (staging tables)
-- needs it. No UPDATE, DELETE or TRUNCATE: merged rows are never changed.
GRANT SELECT, INSERT ON delta, trade, ticker, market_lifecycle, event_lifecycle, snapshot,
    gatherer_gap TO kdp_dedup;

-- Cursors: read on every (re)connect (was the last batch committed?), upserted in each batch's
-- transaction (`INSERT ... ON CONFLICT (gatherer) DO UPDATE SET gseq, updated_at`).
GRANT SELECT, INSERT, UPDATE ON dedup_cursor TO kdp_dedup;

-- Coverage ledger, in the batch's transaction: coverage_minute counts are added to
-- (upsert), gatherer_uncovered intervals upserted, and a recomputed market's recent
-- coverage_gap rows replaced (DELETE, then upsert). The only DELETE kdp_dedup has.
GRANT SELECT, INSERT, UPDATE ON coverage_minute, gatherer_uncovered TO kdp_dedup;
GRANT SELECT, INSERT, UPDATE, DELETE ON coverage_gap TO kdp_dedup;

-- Exchange metadata: the sync upserts series, events and markets (latest wins) and reads
-- events for a market's series. Rows are never deleted.
GRANT SELECT, INSERT, UPDATE ON series, events, markets TO kdp_dedup;

-- Readers: every table, SELECT only (cursors and the ledger included: the runbook reads them).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO kdp_reader;

-- Both may read the migration ledger: `kdp check-config` reports the schema version.
GRANT SELECT ON schema_migrations TO kdp_dedup;

-- Tables that later migrations create (as the role running this one) are readable by both
-- roles; what kdp_dedup may write in them is granted by the migration that creates them.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO kdp_dedup, kdp_reader;

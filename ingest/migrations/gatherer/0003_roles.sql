-- Gatherer buffer, version 3: least-privilege group roles (deploy/RUNBOOK.md section 2).
--
-- Two NOLOGIN group roles; operators create the LOGIN users and GRANT them one of these:
--   kdp_gatherer_writer  the gatherer's writer (ingest/src/store/writer.rs): appends rows and
--                        records its runs; never rewrites or removes history.
--   kdp_gatherer_reader  the deduplicator's reader of this database (dedup/src/reader.rs):
--                        reads rows and LISTENs for commits (LISTEN needs no privilege).
-- The tables stay owned by the role that applies the migrations (the database owner); neither
-- group role may create, alter, drop, delete or truncate anything.
--
-- Roles are cluster-wide while migrations run per database, and several databases of one cluster
-- may migrate at once (one cluster per host in production, many test databases in parallel in
-- tests). So each role is created only if missing, and a concurrent CREATE ROLE of the same name
-- (duplicate_object, or unique_violation from the catalog index when the two race) counts as
-- success. The existence check comes first because CREATE ROLE checks the CREATEROLE privilege
-- before the name: a migrating owner without CREATEROLE succeeds when an administrator created
-- the roles beforehand (deploy/RUNBOOK.md section 2). Grants below are per database and
-- idempotent.

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kdp_gatherer_writer') THEN
        CREATE ROLE kdp_gatherer_writer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kdp_gatherer_reader') THEN
        CREATE ROLE kdp_gatherer_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Nobody but the owner creates objects here. PostgreSQL 15 and later already leave PUBLIC
-- without CREATE on schema public; older clusters and restored dumps may not, so say it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Both roles connect and resolve names in public. CONNECT is granted explicitly so an operator
-- may `REVOKE ALL ON DATABASE ... FROM PUBLIC` (the runbook does) without locking them out.
DO $$ BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO kdp_gatherer_writer, kdp_gatherer_reader',
                   current_database());
END $$;
GRANT USAGE ON SCHEMA public TO kdp_gatherer_writer, kdp_gatherer_reader;

-- Writer. INSERT: every batch is one binary COPY per record table, a `batch` row, and the
-- run's `run_conn` progress; a start inserts its `run` row (and a restart/crash `gap` row with
-- its one-row `batch`). SELECT: on (re)connect it reads the last committed gseq from `batch`,
-- its own or the previous `run`, that run's `run_conn` and the restart `gap` kind; INSERT ...
-- ON CONFLICT on `run_conn` reads the conflicting row. No DELETE, TRUNCATE or UPDATE on the
-- record tables: rows are append-only (retention, when built, gets its own grant).
GRANT SELECT, INSERT ON batch, delta, trade, ticker, snapshot, market_lifecycle,
    event_lifecycle, gap, raw_frame, run, run_conn TO kdp_gatherer_writer;
-- UPDATE, column by column: the clean stop sets `run.stopped_ns` and `run.last_gseq`; the
-- progress upsert sets `run_conn.last_gseq` and `last_recv_ns`. A run's identity (run_id,
-- token, started_ns, first_gseq) cannot be rewritten.
GRANT UPDATE (stopped_ns, last_gseq) ON run TO kdp_gatherer_writer;
GRANT UPDATE (last_gseq, last_recv_ns) ON run_conn TO kdp_gatherer_writer;
-- No sequence grant: the only sequence is run.run_id's identity, which an INSERT draws from
-- under the table's INSERT privilege. gseqs are numbered by the writer itself.

-- Reader: SELECT on every table (the record tables in gseq ranges, `batch` for the head and the
-- commit time of the oldest unmerged row). Nothing else.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO kdp_gatherer_reader;

-- Both may read the migration ledger: `kdp check-config` reports the schema version.
GRANT SELECT ON schema_migrations TO kdp_gatherer_writer, kdp_gatherer_reader;

-- Tables that later migrations create (as the role running this one) are readable by both
-- roles and appendable by the writer; any UPDATE a later table needs is granted by the
-- migration that creates it. Sequences: USAGE so a future serial column's default works.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT ON TABLES TO kdp_gatherer_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT ON TABLES TO kdp_gatherer_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE ON SEQUENCES TO kdp_gatherer_writer;

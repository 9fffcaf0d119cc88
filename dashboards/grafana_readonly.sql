-- A read-only PostgreSQL role for Grafana: exactly what dashboards/monitor.json reads, nothing
-- else (docs/dashboards.md, "The read-only role").
--
-- Run it as the owner of the monitor database (or a superuser), connected to that database,
-- after `monitor db upgrade`:
--
--     psql "postgresql://monitor@db.internal/monitor" -v ON_ERROR_STOP=1 -f dashboards/grafana_readonly.sql
--     psql "postgresql://monitor@db.internal/monitor" -c '\password monitor_grafana'
--
-- The role is created with the placeholder password below only if it does not exist yet; set the
-- real one at once with `\password` (it never appears in a file, the shell history or the
-- server log). Re-running the script is safe: it revokes what the role had and grants the list
-- below again, and leaves the password alone.
--
-- What the role can NOT read, on purpose:
--   endpoints.url        operators' URLs carry their API keys: column grants leave it out
--   batches.body and the signatures (the raw signed batches: large, and not for dashboards)
--   webhook_deliveries, attestations, attestation_batches, attestation_signatures, documents,
--   probe_minutes, probe_hours, alembic_version
-- and it can write nothing anywhere.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monitor_grafana') THEN
    CREATE ROLE monitor_grafana LOGIN PASSWORD 'change-me' NOSUPERUSER NOCREATEDB NOCREATEROLE
      NOINHERIT NOREPLICATION CONNECTION LIMIT 20;
  END IF;
END
$$;

-- Defence in depth (the grants below are what protects the data): every session of the role is
-- read-only, and a runaway query is cut off. No JIT: dashboard queries are short, and compiling
-- them costs more than it saves (measured in tests/dashboards/test_performance.py).
ALTER ROLE monitor_grafana SET default_transaction_read_only = on;
ALTER ROLE monitor_grafana SET statement_timeout = '30s';
ALTER ROLE monitor_grafana SET jit = off;

-- Start from nothing in this database (a re-run converges on the list below).
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM monitor_grafana;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM monitor_grafana;

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO monitor_grafana', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO monitor_grafana;

-- Registry tables (no secrets in them but the endpoint URLs).
GRANT SELECT ON chains, operators, probes TO monitor_grafana;
GRANT SELECT (id, operator_id, chain_id, archive, active, updated_at) ON endpoints
  TO monitor_grafana;

-- Ingest: the batches' bookkeeping, not their bodies; the results.
GRANT SELECT (id, probe_id, batch_id, created_at, received_at, result_count, rolled_up)
  ON batches TO monitor_grafana;
GRANT SELECT ON results TO monitor_grafana;

-- Scoring.
GRANT SELECT ON scoring_runs, scores, probe_scores TO monitor_grafana;

-- SLA rollups and breach events.
GRANT SELECT ON subject_minutes, subject_hours, breach_events TO monitor_grafana;

-- Tables added by later migrations are NOT readable until this script grants them: a new table
-- may hold something Grafana must not see (as webhook_deliveries and attestations do). Re-run
-- the script after an upgrade whose dashboard needs a new table. The blanket alternative,
--
--     ALTER DEFAULT PRIVILEGES FOR ROLE monitor IN SCHEMA public
--       GRANT SELECT ON TABLES TO monitor_grafana;
--
-- (run once, `monitor` being the role that runs the migrations) would make every future table
-- readable, including ones with secrets: use it only if you accept that. On PostgreSQL 14 and
-- older, also take CREATE on the public schema away from everyone, which newer versions do by
-- default:
--
--     REVOKE CREATE ON SCHEMA public FROM PUBLIC;

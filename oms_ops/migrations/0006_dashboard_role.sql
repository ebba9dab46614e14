-- Least-privilege database role of the Streamlit dashboards (docs/dashboards.md).
--
-- oms_dashboard is a NOLOGIN group role that holds the privileges; the app connects as a login role that is a
-- member of it (CREATE ROLE oms_dashboard_app LOGIN PASSWORD '…' IN ROLE oms_dashboard), with
-- OMS_DASHBOARD_DATABASE_URL pointing at that login. Roles are cluster-wide while migrations run per database,
-- so the role is created only when missing (and a concurrent creation by another database's migration is
-- tolerated); the GRANTs below are per database.
--
-- What it may do:
--   * read the domain (schemas oms, raw, ops) and the migration table (health page);
--   * write exactly what the dashboard actions' oms_ops functions write: accept_orders (call-centre form,
--     quarantine replay), release_holds, cancel_orders, allocation.reroute, returns.request_return,
--     quarantine.resolve and the outbox retry. Never DELETE or TRUNCATE anything, never DDL, and nothing on
--     the append-only tables but INSERT (their triggers refuse UPDATE/DELETE anyway).
-- A later migration that adds a table a dashboard reads or an action writes grants it to oms_dashboard there.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oms_dashboard') THEN
        CREATE ROLE oms_dashboard NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created at the same moment by the migration of another database of the cluster
END;
$$;

-- reads ------------------------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA oms, raw, ops TO oms_dashboard;
GRANT SELECT ON ALL TABLES IN SCHEMA oms, raw, ops TO oms_dashboard;
GRANT SELECT ON public.schema_migrations TO oms_dashboard;
-- dbt (re)creates the ops views after this migration: views created later by the migrating role are readable too
ALTER DEFAULT PRIVILEGES IN SCHEMA ops GRANT SELECT ON TABLES TO oms_dashboard;

-- writes of the actions ------------------------------------------------------------------------------------
-- orders: accept (insert), hold release / cancel / reroute (state, hold and cancel columns; FOR UPDATE locks)
GRANT INSERT, UPDATE ON oms.orders, oms.order_lines TO oms_dashboard;
GRANT USAGE ON SEQUENCE oms.order_number_seq, oms.rma_number_seq TO oms_dashboard;
-- every transition appends an event; allocation decisions and the inventory ledger are append-only too
GRANT INSERT ON oms.order_events, oms.allocation_decisions, oms.inventory_ledger TO oms_dashboard;
-- reservations and stock: cancel releases, reroute releases and reserves again (locks stock rows)
GRANT INSERT, UPDATE ON oms.reservations, oms.stock, oms.location_capacity_usage TO oms_dashboard;
-- cancel: open picks are cancelled, paid orders get a refund request
GRANT UPDATE ON oms.picks TO oms_dashboard;
GRANT INSERT ON oms.refunds TO oms_dashboard;
-- returns: request an RMA (refund or exchange); an inspected exchange is closed with its replacement order
GRANT INSERT, UPDATE ON oms.returns TO oms_dashboard;
GRANT INSERT ON oms.return_lines TO oms_dashboard;
-- outbox: actions enqueue effects; ops retry failed / dead deliveries
GRANT INSERT, UPDATE ON oms.outbox TO oms_dashboard;
-- quarantine: rejected call-centre input is kept; replay / discard close rows; replays mark raw orders normalised
GRANT INSERT, UPDATE ON raw.quarantine TO oms_dashboard;
GRANT UPDATE ON raw.channel_orders TO oms_dashboard;

-- The dashboards' database role only reads (docs/security.md, docs/api.md).
--
-- Until now oms_dashboard held INSERT/UPDATE on orders, stock, reservations, the outbox, raw payloads… because
-- each dashboard action ran its oms_ops function on the dashboards' own connection. A table grant cannot say
-- "only through cancel_orders": whoever held the dashboards' login could rewrite stock or orders directly. The
-- actions now run in the OMS API (oms_ops.api) under the OMS's own login, after the user's token, role and
-- arguments are checked there, so the role keeps SELECT and loses every write:
--   * INSERT, UPDATE (column grants of 0012 and 0014 included: a table-level REVOKE removes them), DELETE
--     (0010's raw.pending_orders), TRUNCATE, REFERENCES and TRIGGER on every table of oms, raw, ops and
--     connectors;
--   * USAGE and UPDATE on their sequences (nextval / setval);
--   * EXECUTE on 0015's mapping functions, which write: channel mappings are API actions too.
-- Kept: USAGE on the schemas, SELECT, and EXECUTE on connectors.shipment_document_content (0011), which only
-- reads one document.

REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
    ON ALL TABLES IN SCHEMA oms, raw, ops, connectors FROM oms_dashboard;
REVOKE USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA oms, raw, ops, connectors FROM oms_dashboard;
REVOKE EXECUTE ON FUNCTION connectors.map_discovered_location(text, text, text, text) FROM oms_dashboard;
REVOKE EXECUTE ON FUNCTION connectors.map_discovered_listing(text, text, text, text) FROM oms_dashboard;

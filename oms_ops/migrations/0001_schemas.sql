-- Schemas of the system of record.
--   raw   : channel payloads exactly as received, and the quarantine of rejected input
--   oms   : the domain (orders, stock, allocation, shipping, returns, events, outbox)
--   ops   : live operational views built by dbt (dbt-postgres target)
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS oms;
CREATE SCHEMA IF NOT EXISTS ops;

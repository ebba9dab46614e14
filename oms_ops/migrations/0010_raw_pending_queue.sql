-- Ingest: raw payloads kept as the JSON text that was stored, and the normaliser's backlog as a narrow queue.
--
-- payload json (was jsonb): a payload is stored to be read back whole — by the normaliser, by ops looking at
-- what a channel sent — and never searched inside. Turning jsonb back into text cost the normaliser 5-20 µs
-- of server time per payload (more than inserting the order); json IS the text, so reading it back is a
-- copy, and storing it is a syntax check instead of a conversion. (json operators still work for ad-hoc
-- queries: payload->>'posting_number'.)
--
-- raw.pending_orders (was: normalized_at IS NULL): marking a payload normalised was an UPDATE of its raw
-- row — a new 1-4 kB row version, two index entries and the WAL of all of it — for every payload. A payload
-- now waits for the normaliser while its (channel, raw_id) entry exists; the normaliser deletes the entries
-- it takes, in the transaction that accepts their orders (a failure leaves them queued). Rows normalised
-- in the transaction that stored them (the connectors' pages) never enter the queue.
CREATE TABLE raw.pending_orders (
  channel_code text NOT NULL,
  raw_id bigint NOT NULL,          -- raw.channel_orders; no FK: entries are written and deleted with their rows
  PRIMARY KEY (channel_code, raw_id)
);
COMMENT ON TABLE raw.pending_orders IS
  'stored channel payloads waiting for the normaliser (oms_ops.connectors.normalize), oldest raw_id first';

INSERT INTO raw.pending_orders (channel_code, raw_id)
  SELECT channel_code, raw_id FROM raw.channel_orders WHERE normalized_at IS NULL;
DROP INDEX raw.channel_orders_pending_channel_idx;
ALTER TABLE raw.channel_orders DROP COLUMN normalized_at;
ALTER TABLE raw.channel_orders ALTER COLUMN payload TYPE json USING payload::json;

-- the dashboards read the backlog (ingest health) and their quarantine replay dequeues the payloads of the
-- orders it accepts (accept_orders); dequeuing is the one DELETE the dashboard role may do
GRANT SELECT, DELETE ON raw.pending_orders TO oms_dashboard;

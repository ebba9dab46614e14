-- The always-on worker (oms_ops/worker.py): wake-ups, heartbeats and the journal Dagster reads.
--
-- Wake-ups: statement-level triggers NOTIFY channel 'oms_work' with what changed — 'queued' (payloads
-- waiting for the normaliser), 'orders' (new orders to allocate), 'stock' (on hand or reserved moved: ATS to
-- push), 'outbox' (effects to deliver). A NOTIFY is delivered at commit and identical ones of a transaction
-- are folded into one, so a batch of a thousand rows costs one notification, and a rolled-back change wakes
-- nobody. The worker also sweeps on a timer, so a lost notification (worker restarting) delays, never loses.
CREATE OR REPLACE FUNCTION oms.notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('oms_work', TG_ARGV[0]);
  RETURN NULL;
END $$;

CREATE TRIGGER pending_orders_notify AFTER INSERT ON raw.pending_orders
  FOR EACH STATEMENT EXECUTE FUNCTION oms.notify_work('queued');
CREATE TRIGGER orders_notify AFTER INSERT ON oms.orders
  FOR EACH STATEMENT EXECUTE FUNCTION oms.notify_work('orders');
CREATE TRIGGER stock_notify AFTER INSERT OR UPDATE OF on_hand, reserved ON oms.stock
  FOR EACH STATEMENT EXECUTE FUNCTION oms.notify_work('stock');
CREATE TRIGGER outbox_notify AFTER INSERT ON oms.outbox
  FOR EACH STATEMENT EXECUTE FUNCTION oms.notify_work('outbox');

-- one row per worker process: the health page and `oms status` show the heartbeat and the lag
CREATE TABLE oms.worker_heartbeats (
  worker_id text PRIMARY KEY,
  pid integer,
  host text,
  started_at timestamptz NOT NULL DEFAULT now(),
  beat_at timestamptz NOT NULL DEFAULT now(),
  lag_seconds double precision,           -- age of the oldest work waiting (queued payload or new order)
  cycles bigint NOT NULL DEFAULT 0,
  last_error text,
  last_error_at timestamptz
);

-- what the worker did, step by step (only steps that moved something): a Dagster sensor turns new rows into
-- asset materializations of the same assets the schedules run, so lineage and freshness show the fast lane
CREATE TABLE oms.worker_journal (
  entry_id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  worker_id text NOT NULL,
  asset text NOT NULL,                    -- the Dagster asset key the step stands for, e.g. 'ozon_orders'
  metadata jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX worker_journal_at_idx ON oms.worker_journal (at);

GRANT SELECT ON oms.worker_heartbeats, oms.worker_journal TO oms_dashboard;

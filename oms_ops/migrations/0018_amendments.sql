-- Order amendments: a channel's later version of an order we already accepted (same channel + external id,
-- different content). What the OMS may apply on its own (contact and address before shipment, removed lines,
-- cancellations) is applied with events; everything else waits here for ops to accept (applied through
-- oms_ops.changes) or reject. See docs/connectors.md, "Amendments".
CREATE TABLE oms.order_amendments (
  amendment_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  channel_code text NOT NULL,
  external_id text NOT NULL,
  raw_id bigint REFERENCES raw.channel_orders,   -- the payload version that brought the change
  -- field by field: [{"path": "lines[2].qty", "ours": 2, "theirs": 3}, …]
  diff jsonb NOT NULL CHECK (jsonb_typeof(diff) = 'array' AND jsonb_array_length(diff) > 0),
  applied jsonb NOT NULL DEFAULT '[]',           -- what the same version changed automatically
  reason text NOT NULL,                          -- why it was not applied automatically
  state text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'accepted', 'rejected', 'superseded')),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  resolved_by text,
  resolved_at timestamptz,
  note text,                                     -- ops' word on accept / reject, or what superseded it
  CHECK ((state = 'open') = (resolved_at IS NULL))
);
CREATE INDEX order_amendments_open_idx ON oms.order_amendments (created_at) WHERE state = 'open';
CREATE INDEX order_amendments_order_idx ON oms.order_amendments (order_id);
-- at most one open amendment per order: a newer version supersedes the older one
CREATE UNIQUE INDEX order_amendments_one_open_uidx ON oms.order_amendments (order_id) WHERE state = 'open';

-- The dashboards read it; they change it only through the OMS's actions (never a write grant).
GRANT SELECT ON oms.order_amendments TO oms_dashboard;

-- Allocation (reservation + routing): the decision audit, capacity bookings and business-config snapshots.
-- Owned by oms_ops/allocation.py, oms_ops/reservations.py and oms_ops/business_config.py.

-- Every validated business configuration that was synced, so a decision can cite the exact rules it used.
CREATE TABLE oms.business_config_versions (
  fingerprint text PRIMARY KEY,             -- sha256 prefix of the validated content
  body jsonb NOT NULL,
  loaded_at timestamptz NOT NULL DEFAULT now()
);

-- Why an order was (or was not) allocated where it was: one row per allocation attempt that changed
-- something (a reservation made or an order state changed) and per reroute. Append-only.
CREATE TABLE oms.allocation_decisions (
  decision_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  kind text NOT NULL CHECK (kind IN ('allocate','backorder','reroute')),
  outcome text NOT NULL CHECK (outcome IN ('allocated','partially_allocated','backordered')),
  rule_name text,
  split_allowed boolean NOT NULL DEFAULT false,
  locations text[] NOT NULL DEFAULT '{}',   -- chosen locations (reservations of this decision)
  -- [{location, handover, carrier, tariff, zone, cost, distance_km, ship_date, eta, lines: [[line_id, sku, qty]]}]
  shipments jsonb NOT NULL DEFAULT '[]',
  -- best plans considered, each with its score components (cost, distance_km, eta, sla_misses, ...)
  candidates jsonb NOT NULL DEFAULT '[]',
  short_lines jsonb NOT NULL DEFAULT '[]',  -- [{line_id, sku, requested, available}]
  reason text NOT NULL,                     -- one human sentence for ops
  ship_by timestamptz,                      -- SLA ship-by deadline of the order
  promise_date date,                        -- SLA promise (placed_at + promise days, business time zone)
  eta date,                                 -- estimated delivery / ready-for-pickup date of the plan
  config_fingerprint text,                  -- oms.business_config_versions.fingerprint
  actor text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocation_decisions_order_idx ON oms.allocation_decisions (order_id, decision_id DESC);
CREATE INDEX allocation_decisions_created_idx ON oms.allocation_decisions (created_at);
CREATE TRIGGER allocation_decisions_append_only BEFORE UPDATE OR DELETE ON oms.allocation_decisions
  FOR EACH ROW EXECUTE FUNCTION oms.forbid_mutation();

-- Shipments booked per location and local ship date, against locations.capacity_per_day. A planning input
-- (it moves promises to later days), not a hard invariant: see docs/allocation.md.
CREATE TABLE oms.location_capacity_usage (
  location_code text NOT NULL REFERENCES oms.locations,
  ship_date date NOT NULL,
  shipments integer NOT NULL DEFAULT 0 CHECK (shipments >= 0),
  PRIMARY KEY (location_code, ship_date)
);

-- The allocator's queue, in service order (placed_at, order_id).
CREATE INDEX orders_allocatable_idx ON oms.orders (placed_at, order_id)
  WHERE state IN ('new', 'backordered', 'partially_allocated');
-- Reservations that may expire (unpaid prepaid orders).
CREATE INDEX reservations_expiring_idx ON oms.reservations (expires_at)
  WHERE state = 'active' AND expires_at IS NOT NULL;

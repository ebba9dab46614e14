-- Core data model of the system of record: reference data, stock and its ledger, orders, reservations,
-- fulfillment (picks, shipments, tracking), returns, payments, events, outbox, raw input and quarantine.
--
-- The mandatory DDL of the core contract is reproduced with exactly its names and types; everything else
-- (extra columns, tables, indexes) is additive. Timestamps are timestamptz (stored UTC); the KPI marts bucket
-- them by business date. Columns named <event>_at are stamped the FIRST time the entity reaches the state
-- (see oms_ops/state_machine.py STAMPS), so re-entering a state never rewrites KPI history.

-- ---------------------------------------------------------------------------------------------------------
-- helpers
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION oms.forbid_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

-- ---------------------------------------------------------------------------------------------------------
-- reference data
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE oms.channels (
  channel_code text PRIMARY KEY,            -- 'ozon', 'wildberries', 'webstore', 'offline', 'callcentre'
  name text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('marketplace','webstore','store','callcentre')),
  active boolean NOT NULL DEFAULT true
);

CREATE TABLE oms.locations (
  location_code text PRIMARY KEY,           -- 'WH-MSK', 'ST-MSK-1', 'PP-SPB-1' ...
  name text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('warehouse','store','pickup_point')),
  region text NOT NULL, city text NOT NULL,
  lat double precision NOT NULL, lon double precision NOT NULL,
  timezone text NOT NULL DEFAULT 'Europe/Moscow',
  capacity_per_day integer,                 -- NULL = unlimited; shipments/orders it can handle per local day
  cutoff_local time,                        -- orders allocated after this local time ship next day
  ships boolean NOT NULL DEFAULT true,      -- can ship parcels via carriers
  hands_over boolean NOT NULL DEFAULT false,-- can hand orders over to customers (click & collect)
  priority integer NOT NULL DEFAULT 100,
  active boolean NOT NULL DEFAULT true
);

CREATE TABLE oms.products (
  sku text PRIMARY KEY, name text NOT NULL,
  weight_g integer NOT NULL CHECK (weight_g >= 0),
  length_cm numeric(8,1), width_cm numeric(8,1), height_cm numeric(8,1),
  price numeric(12,2) NOT NULL CHECK (price >= 0), barcode text,
  active boolean NOT NULL DEFAULT true,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Return reasons are data (KPI "damage-free" and seller-fault splits read the flags).
CREATE TABLE oms.return_reasons (
  reason_code text PRIMARY KEY,
  description text NOT NULL,
  is_damage boolean NOT NULL DEFAULT false,
  is_seller_fault boolean NOT NULL DEFAULT false
);
INSERT INTO oms.return_reasons (reason_code, description, is_damage, is_seller_fault) VALUES
  ('defective',          'Product does not work / manufacturing defect', true,  true),
  ('damaged_in_transit', 'Arrived damaged',                              true,  true),
  ('wrong_item',         'Wrong item or quantity sent',                  false, true),
  ('not_as_described',   'Not as described',                             false, true),
  ('late_delivery',      'Arrived too late',                             false, true),
  ('size_fit',           'Size or fit',                                  false, false),
  ('changed_mind',       'Customer changed their mind',                  false, false),
  ('not_delivered',      'Parcel not delivered / returned to sender',    false, false),
  ('other',              'Other',                                        false, false);

-- ---------------------------------------------------------------------------------------------------------
-- stock
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE oms.stock (
  location_code text NOT NULL REFERENCES oms.locations,
  sku text NOT NULL REFERENCES oms.products,
  on_hand integer NOT NULL DEFAULT 0,
  reserved integer NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (location_code, sku),
  CONSTRAINT stock_on_hand_nonneg CHECK (on_hand >= 0),
  CONSTRAINT stock_reserved_bounds CHECK (reserved >= 0 AND reserved <= on_hand)
);
CREATE INDEX stock_sku_idx ON oms.stock (sku);

-- append-only (trigger below)
CREATE TABLE oms.inventory_ledger (
  entry_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  location_code text NOT NULL, sku text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('receipt','adjustment','reservation','release','pick','ship',
                                     'return_restock','write_off')),
  on_hand_delta integer NOT NULL DEFAULT 0,
  reserved_delta integer NOT NULL DEFAULT 0,
  order_id bigint, line_id bigint, reservation_id bigint,
  reference text,                           -- snapshot id, receipt doc, RMA number ...
  actor text NOT NULL, reason text,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- invariant: stock.on_hand = Σ on_hand_delta and stock.reserved = Σ reserved_delta per (location, sku)
--            stock.reserved = Σ qty of reservations in state 'active' per (location, sku)
CREATE INDEX inventory_ledger_loc_sku_idx ON oms.inventory_ledger (location_code, sku);
CREATE INDEX inventory_ledger_order_idx ON oms.inventory_ledger (order_id) WHERE order_id IS NOT NULL;
CREATE TRIGGER inventory_ledger_append_only BEFORE UPDATE OR DELETE ON oms.inventory_ledger
  FOR EACH ROW EXECUTE FUNCTION oms.forbid_mutation();

-- One row per stock document applied (WMS snapshot, receipt, adjustment, write-off). The unique key makes a
-- re-delivered document a no-op; taken_at lets a late (older) WMS snapshot be recognised as stale.
CREATE TABLE oms.stock_documents (
  doc_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('wms_snapshot','receipt','adjustment','write_off')),
  location_code text NOT NULL REFERENCES oms.locations,
  reference text NOT NULL,
  taken_at timestamptz,
  actor text NOT NULL,
  summary jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (kind, location_code, reference)
);

-- ---------------------------------------------------------------------------------------------------------
-- raw input and quarantine
-- ---------------------------------------------------------------------------------------------------------
-- Channel payloads exactly as received. Re-delivery of the same payload is a no-op; a changed payload for the
-- same external id is a new row (the history of what the channel said).
CREATE TABLE raw.channel_orders (
  raw_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  channel_code text NOT NULL,
  external_id text NOT NULL,
  payload jsonb NOT NULL,
  payload_hash text NOT NULL,               -- sha256 of the canonical JSON (sorted keys, compact)
  received_at timestamptz NOT NULL DEFAULT now(),
  normalized_at timestamptz,                -- set by the normalizer once handed to accept_orders
  UNIQUE (channel_code, external_id, payload_hash)
);
CREATE INDEX channel_orders_pending_idx ON raw.channel_orders (raw_id) WHERE normalized_at IS NULL;

CREATE TABLE raw.quarantine (
  quarantine_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source text NOT NULL,                     -- 'ozon', 'wms', 'pos', 'accept_orders' ...
  external_id text,
  payload jsonb NOT NULL,
  reason text NOT NULL,
  state text NOT NULL DEFAULT 'open' CHECK (state IN ('open','replayed','discarded')),
  received_at timestamptz NOT NULL DEFAULT now(), resolved_at timestamptz, resolved_by text
);
CREATE INDEX quarantine_open_idx ON raw.quarantine (source, quarantine_id) WHERE state = 'open';

-- ---------------------------------------------------------------------------------------------------------
-- orders
-- ---------------------------------------------------------------------------------------------------------
CREATE SEQUENCE oms.order_number_seq;
CREATE TABLE oms.orders (
  order_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_number text NOT NULL UNIQUE
      DEFAULT ('ORD-' || lpad(nextval('oms.order_number_seq')::text, 8, '0')),  -- human number
  channel_code text NOT NULL REFERENCES oms.channels,
  external_id text NOT NULL,
  state text NOT NULL DEFAULT 'new',
  placed_at timestamptz NOT NULL,
  customer_name text, customer_phone text, customer_email text,
  delivery_method text NOT NULL CHECK (delivery_method IN ('courier','pickup_point','store_pickup')),
  pickup_location_code text REFERENCES oms.locations,   -- chosen store / pickup point when not courier
  region text, city text, address text, lat double precision, lon double precision,
  promised_at timestamptz,                  -- promised delivery / ready-for-pickup time
  payment_method text NOT NULL DEFAULT 'prepaid' CHECK (payment_method IN ('prepaid','cod')),
  payment_status text NOT NULL DEFAULT 'pending'
      CHECK (payment_status IN ('pending','paid','failed','refunded','partially_refunded')),
  currency text NOT NULL DEFAULT 'RUB',
  total_amount numeric(14,2) NOT NULL DEFAULT 0,
  shipping_amount numeric(14,2) NOT NULL DEFAULT 0,
  hold_reason text,
  parent_order_id bigint REFERENCES oms.orders,   -- exchange replacement → original
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (channel_code, external_id),
  -- additions (A) ------------------------------------------------------------------------------------------
  hold_code text,                           -- machine-readable hold reason: 'unknown_sku', 'manual', ...
  channel_order_number text,                -- the channel's own human number (Ozon posting_number ...)
  requested_delivery_at timestamptz,        -- what the customer asked for (KPI: requested date)
  latest_promised_at timestamptz,           -- last re-promise (KPI: latest promised date)
  raw_id bigint,                            -- raw.channel_orders row it was normalised from
  cancel_reason text,
  -- KPI timestamps, stamped the first time the order reaches the stage
  allocated_at timestamptz,
  picking_started_at timestamptz,
  picked_at timestamptz,                    -- every line of the order picked
  packed_at timestamptz,
  first_shipped_at timestamptz,             -- first shipment handed to fulfilment (time to first shipment)
  shipped_at timestamptz,                   -- everything that will ship has shipped
  ready_for_pickup_at timestamptz,
  delivered_at timestamptz,                 -- last delivery / pickup of the order
  cancelled_at timestamptz
);
CREATE INDEX orders_state_idx ON oms.orders (state);
CREATE INDEX orders_placed_idx ON oms.orders (placed_at);
CREATE INDEX orders_phone_idx ON oms.orders (customer_phone) WHERE customer_phone IS NOT NULL;
CREATE INDEX orders_parent_idx ON oms.orders (parent_order_id) WHERE parent_order_id IS NOT NULL;
CREATE INDEX orders_updated_idx ON oms.orders (updated_at);

CREATE TABLE oms.order_lines (
  line_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  line_no integer NOT NULL,
  sku text NOT NULL,                        -- not a FK: unknown SKUs put the order on hold
  qty integer NOT NULL CHECK (qty > 0),
  unit_price numeric(12,2) NOT NULL CHECK (unit_price >= 0),
  state text NOT NULL DEFAULT 'new',
  qty_shipped integer NOT NULL DEFAULT 0,
  qty_cancelled integer NOT NULL DEFAULT 0,
  UNIQUE (order_id, line_no),
  CHECK (qty_shipped >= 0 AND qty_shipped + qty_cancelled <= qty),
  -- additions (A) ------------------------------------------------------------------------------------------
  name text,
  qty_returned integer NOT NULL DEFAULT 0,  -- received back (restocked or written off)
  split_from_line_id bigint REFERENCES oms.order_lines,  -- short-picked remainder re-ordered as its own line
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT order_lines_cancelled_nonneg CHECK (qty_cancelled >= 0),
  CONSTRAINT order_lines_returned_bounds CHECK (qty_returned >= 0 AND qty_returned <= qty_shipped)
);
CREATE INDEX order_lines_order_idx ON oms.order_lines (order_id);
CREATE INDEX order_lines_open_sku_idx ON oms.order_lines (sku) WHERE state IN ('new','backordered');

CREATE TABLE oms.reservations (
  reservation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  line_id bigint NOT NULL REFERENCES oms.order_lines,
  location_code text NOT NULL, sku text NOT NULL,
  qty integer NOT NULL CHECK (qty > 0),
  state text NOT NULL DEFAULT 'active' CHECK (state IN ('active','consumed','released','expired')),
  expires_at timestamptz,                   -- unpaid prepaid orders
  decision_id bigint,                       -- B's allocation decision row (why)
  created_at timestamptz NOT NULL DEFAULT now(),
  closed_at timestamptz
);
CREATE INDEX ON oms.reservations (line_id) WHERE state = 'active';
CREATE INDEX ON oms.reservations (order_id);
CREATE INDEX reservations_active_stock_idx ON oms.reservations (location_code, sku) WHERE state = 'active';
-- invariant: a line is reserved at most once: Σ qty of active+consumed reservations per line <= line.qty

-- ---------------------------------------------------------------------------------------------------------
-- fulfillment: picks, shipments, tracking
-- ---------------------------------------------------------------------------------------------------------
-- A pick is the work of one location for one order: what was expected (the active reservations) and what the
-- picker actually found. Pick accuracy = pick lines with qty_picked = qty_expected.
CREATE TABLE oms.picks (
  pick_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  location_code text NOT NULL REFERENCES oms.locations,
  state text NOT NULL DEFAULT 'picked' CHECK (state IN ('picked','packed','shipped','cancelled')),
  picker text,
  packages integer,
  picked_at timestamptz NOT NULL DEFAULT now(),
  packed_at timestamptz,
  shipment_id bigint,
  actor text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX picks_order_idx ON oms.picks (order_id, location_code);

CREATE TABLE oms.pick_lines (
  pick_id bigint NOT NULL REFERENCES oms.picks,
  reservation_id bigint NOT NULL REFERENCES oms.reservations,
  line_id bigint NOT NULL REFERENCES oms.order_lines,
  sku text NOT NULL,
  qty_expected integer NOT NULL CHECK (qty_expected > 0),
  qty_picked integer NOT NULL CHECK (qty_picked >= 0 AND qty_picked <= qty_expected),
  qty_short integer GENERATED ALWAYS AS (qty_expected - qty_picked) STORED,
  discrepancy_reason text,                  -- 'not_found', 'damaged', ... when qty_short > 0
  PRIMARY KEY (pick_id, reservation_id)
);
CREATE INDEX pick_lines_line_idx ON oms.pick_lines (line_id);

CREATE SEQUENCE oms.shipment_number_seq;
CREATE TABLE oms.shipments (
  shipment_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  shipment_number text NOT NULL UNIQUE       -- our number, sent to the carrier (CDEK `number`, ≤ 40 ASCII)
      DEFAULT ('SHP-' || lpad(nextval('oms.shipment_number_seq')::text, 8, '0')),
  order_id bigint NOT NULL REFERENCES oms.orders,
  location_code text NOT NULL REFERENCES oms.locations,
  carrier_code text NOT NULL,               -- 'cdek', ... ; 'self' = handed over by our own store
  service_code text,                        -- carrier tariff
  delivery_method text NOT NULL,
  pickup_location_code text,
  carrier_shipment_id text,                 -- carrier's id (CDEK entity uuid)
  tracking_number text,                     -- carrier's tracking number (CDEK cdek_number)
  state text NOT NULL DEFAULT 'created',
  packages integer,
  weight_g integer,
  promised_at timestamptz,
  rts_disposition text CHECK (rts_disposition IN ('restock','write_off')),
  created_at timestamptz NOT NULL DEFAULT now(),
  label_printed_at timestamptz,
  handed_over_at timestamptz,               -- handed to the carrier
  in_transit_at timestamptz,
  ready_for_pickup_at timestamptz,
  delivered_at timestamptz,
  picked_up_at timestamptz,
  not_delivered_at timestamptz,
  returned_at timestamptz,                  -- back at the sender
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipments_order_idx ON oms.shipments (order_id);
CREATE INDEX shipments_state_idx ON oms.shipments (state);
CREATE UNIQUE INDEX shipments_tracking_uidx ON oms.shipments (carrier_code, tracking_number)
  WHERE tracking_number IS NOT NULL;
CREATE INDEX shipments_tracking_idx ON oms.shipments (tracking_number) WHERE tracking_number IS NOT NULL;
ALTER TABLE oms.picks ADD CONSTRAINT picks_shipment_fk FOREIGN KEY (shipment_id) REFERENCES oms.shipments;

CREATE TABLE oms.shipment_lines (
  shipment_id bigint NOT NULL REFERENCES oms.shipments,
  line_id bigint NOT NULL REFERENCES oms.order_lines,
  sku text NOT NULL,
  qty integer NOT NULL CHECK (qty > 0),
  PRIMARY KEY (shipment_id, line_id)
);
CREATE INDEX shipment_lines_line_idx ON oms.shipment_lines (line_id);

-- Carrier status events as reported; idempotent by (shipment, status code, time). mapped_state/applied say
-- what the event did to the shipment (an out-of-order event is kept but applied = false).
CREATE TABLE oms.tracking_events (
  tracking_event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  shipment_id bigint NOT NULL REFERENCES oms.shipments,
  status_code text NOT NULL,
  status_name text,
  occurred_at timestamptz NOT NULL,
  city text,
  mapped_state text,
  applied boolean NOT NULL DEFAULT false,
  received_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (shipment_id, status_code, occurred_at)
);

-- ---------------------------------------------------------------------------------------------------------
-- returns
-- ---------------------------------------------------------------------------------------------------------
CREATE SEQUENCE oms.rma_number_seq;
CREATE TABLE oms.returns (
  return_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  rma_number text NOT NULL UNIQUE DEFAULT ('RMA-' || lpad(nextval('oms.rma_number_seq')::text, 8, '0')),
  order_id bigint NOT NULL REFERENCES oms.orders,
  kind text NOT NULL DEFAULT 'refund' CHECK (kind IN ('refund','exchange')),
  state text NOT NULL DEFAULT 'requested',
  channel_return_id text,                   -- marketplace return id: a re-delivered request is a no-op
  location_code text REFERENCES oms.locations,   -- where it was received
  note text,
  exchange_order_id bigint REFERENCES oms.orders,
  requested_at timestamptz NOT NULL DEFAULT now(),
  received_at timestamptz,
  inspected_at timestamptz,
  closed_at timestamptz,
  cancelled_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (order_id, channel_return_id)
);
CREATE INDEX returns_order_idx ON oms.returns (order_id);

CREATE TABLE oms.return_lines (
  return_line_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  return_id bigint NOT NULL REFERENCES oms.returns,
  line_id bigint NOT NULL REFERENCES oms.order_lines,
  sku text NOT NULL,
  qty integer NOT NULL CHECK (qty > 0),
  reason_code text NOT NULL REFERENCES oms.return_reasons,
  reason_text text,
  qty_received integer NOT NULL DEFAULT 0 CHECK (qty_received >= 0 AND qty_received <= qty),
  disposition text CHECK (disposition IN ('restock','write_off')),
  inspected_at timestamptz,
  UNIQUE (return_id, line_id)
);
CREATE INDEX return_lines_line_idx ON oms.return_lines (line_id);

-- ---------------------------------------------------------------------------------------------------------
-- payments and refunds
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE oms.payments (
  payment_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  provider text NOT NULL,
  provider_payment_id text NOT NULL,
  method text,
  amount numeric(14,2) NOT NULL CHECK (amount >= 0),
  currency text NOT NULL DEFAULT 'RUB',
  state text NOT NULL,
  reported_at timestamptz,                  -- provider's time of the last applied report
  paid_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (provider, provider_payment_id)
);
CREATE INDEX payments_order_idx ON oms.payments (order_id);

CREATE TABLE oms.refunds (
  refund_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  return_id bigint REFERENCES oms.returns,
  amount numeric(14,2) NOT NULL CHECK (amount > 0),
  currency text NOT NULL DEFAULT 'RUB',
  reason text,
  state text NOT NULL DEFAULT 'requested',
  idempotency_key text NOT NULL UNIQUE,     -- also the outbox key of the 'payment.refund' effect
  provider text,
  provider_refund_id text,
  requested_at timestamptz NOT NULL DEFAULT now(),
  completed_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (provider, provider_refund_id)
);
CREATE INDEX refunds_order_idx ON oms.refunds (order_id);

-- ---------------------------------------------------------------------------------------------------------
-- events and outbox
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE oms.order_events (           -- append-only (trigger), every accepted transition
  event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL,
  entity text NOT NULL CHECK (entity IN ('order','order_line','shipment','return','payment','refund')),
  entity_id bigint NOT NULL,
  from_state text, to_state text NOT NULL,
  actor text NOT NULL, reason text, data jsonb,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_events_order_idx ON oms.order_events (order_id, event_id);
CREATE INDEX order_events_entity_idx ON oms.order_events (entity, entity_id);
CREATE TRIGGER order_events_append_only BEFORE UPDATE OR DELETE ON oms.order_events
  FOR EACH ROW EXECUTE FUNCTION oms.forbid_mutation();

CREATE TABLE oms.outbox (
  outbox_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  effect text NOT NULL,                     -- 'carrier.create_shipment', 'channel.order_status', 'payment.refund', 'ats.push', 'notify.customer', 'erp.export'
  payload jsonb NOT NULL,
  idempotency_key text NOT NULL UNIQUE,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','in_flight','done','failed','dead')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(), done_at timestamptz
);
CREATE INDEX outbox_due_idx ON oms.outbox (effect, next_attempt_at) WHERE state IN ('pending','failed','in_flight');

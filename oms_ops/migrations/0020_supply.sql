-- Incoming supply and promise dates (docs/allocation.md, "Incoming supply and promise dates").
--
-- Purchase orders and inter-location transfers with an expected arrival date are future stock at their
-- destination. They come from the WMS (its inbound feed), from a CSV or a 1C CommerceML purchase-order export
-- (`oms supply import`), or are entered by hand; each is unique per (source, external id), so a re-import
-- updates instead of duplicating. Waiting order lines (backordered, and pre-order lines held until their
-- product's release date) get a promise from the first expected supply that covers them, first-in-first-out
-- (oms_ops/supply.py): one row per waiting line, with the date and the supply — or none, and why.

CREATE TABLE oms.supplies (
  supply_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source text NOT NULL CHECK (source IN ('wms', 'csv', '1c', 'manual')),
  external_id text NOT NULL,                     -- the PO / transfer number in its source
  kind text NOT NULL CHECK (kind IN ('purchase_order', 'transfer')),
  location_code text NOT NULL REFERENCES oms.locations,       -- where it arrives
  from_location_code text REFERENCES oms.locations,           -- transfers: where it leaves from
  supplier text,                                 -- purchase orders: the supplier as the source names it
  expected_date date NOT NULL,                   -- expected arrival at location_code
  state text NOT NULL DEFAULT 'expected'
      CHECK (state IN ('expected', 'partially_received', 'received', 'cancelled')),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  received_at timestamptz,                       -- fully received
  cancelled_at timestamptz,
  UNIQUE (source, external_id),
  CHECK ((kind = 'transfer') = (from_location_code IS NOT NULL)),
  CHECK (from_location_code IS DISTINCT FROM location_code)
);
-- the promise computation reads only open supply, soonest first
CREATE INDEX supplies_open_idx ON oms.supplies (expected_date, supply_id)
  WHERE state IN ('expected', 'partially_received');

CREATE TABLE oms.supply_lines (
  supply_id bigint NOT NULL REFERENCES oms.supplies,
  sku text NOT NULL REFERENCES oms.products,
  qty integer NOT NULL CHECK (qty > 0),          -- ordered / sent
  qty_received integer NOT NULL DEFAULT 0 CHECK (qty_received >= 0),
  PRIMARY KEY (supply_id, sku)
);
CREATE INDEX supply_lines_sku_idx ON oms.supply_lines (sku);

-- Pre-orders: a product sold before it is released. Lines for it are accepted and wait (backordered, with a
-- promise no earlier than the release date); the allocator does not reserve them before that date.
ALTER TABLE oms.products
  ADD COLUMN preorder boolean NOT NULL DEFAULT false,
  ADD COLUMN release_date date,
  ADD CONSTRAINT products_preorder_release CHECK (NOT preorder OR release_date IS NOT NULL);

-- The promise of each waiting line, as last computed (the whole set is recomputed at once). A line without a
-- date says why (no expected supply at a location that may serve the order covers it).
CREATE TABLE oms.line_promises (
  line_id bigint PRIMARY KEY REFERENCES oms.order_lines,
  order_id bigint NOT NULL REFERENCES oms.orders,
  sku text NOT NULL,
  qty integer NOT NULL CHECK (qty > 0),          -- the open quantity the promise is for
  promised_date date,
  covered_by text CHECK (covered_by IN ('supply', 'stock')),  -- stock: a pre-order waiting on hand stock
  supply_id bigint REFERENCES oms.supplies,
  location_code text REFERENCES oms.locations,
  preorder boolean NOT NULL DEFAULT false,
  reason text NOT NULL,
  computed_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((promised_date IS NULL) = (covered_by IS NULL)),
  CHECK ((covered_by = 'supply') = (supply_id IS NOT NULL))
);
CREATE INDEX line_promises_order_idx ON oms.line_promises (order_id);
CREATE INDEX line_promises_supply_idx ON oms.line_promises (supply_id) WHERE supply_id IS NOT NULL;

-- The dashboards read them; changes go through the OMS (CLI, API, worker, Dagster), never a write grant.
GRANT SELECT ON oms.supplies, oms.supply_lines, oms.line_promises TO oms_dashboard;

-- An order waits for known supply when every one of its waiting lines has a promise date: the unfillable
-- sweep (oms_ops/unfillable.py) neither parks nor cancels such an order as 'exhausted'.
CREATE FUNCTION oms.fully_promised(p_order_id bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM oms.line_promises WHERE order_id = p_order_id)
     AND NOT EXISTS (SELECT 1 FROM oms.line_promises WHERE order_id = p_order_id AND promised_date IS NULL)
$$;

-- Connectors: where each channel connector stands (cursors, watermarks), what it has already received
-- (webhook receipts, processed POS files), what it pushed (available-to-sell), what the carrier printed
-- (label and waybill PDFs), and how OMS SKUs / locations are named in each external system.
-- Owned by oms_ops/connectors/. Raw payloads themselves live in raw.channel_orders (0002).
CREATE SCHEMA IF NOT EXISTS connectors;

-- ---------------------------------------------------------------------------------------------------------
-- mapping between the OMS and each external system
-- ---------------------------------------------------------------------------------------------------------
-- One row per (channel, OMS SKU): the ids the channel knows the product by. Channels: 'ozon'
-- (offer_id, product_id, ozon sku), 'wildberries' (nmId, chrtId, barcode), 'webstore' (variant, product,
-- inventory item). Seeded from the simulators' catalog by connectors.seed.seed_from_simulators.
CREATE TABLE connectors.channel_listings (
  channel_code text NOT NULL,
  sku text NOT NULL REFERENCES oms.products,
  offer_id text,                            -- Ozon offer_id (the seller's article)
  product_id bigint,                        -- Ozon product_id / Shopify product id
  channel_sku bigint,                       -- Ozon sku / WB nmId
  chrt_id bigint,                           -- WB chrtId (size id: the stock key)
  variant_id bigint,                        -- Shopify variant
  inventory_item_id bigint,                 -- Shopify inventory item (the stock key)
  barcode text,
  active boolean NOT NULL DEFAULT true,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (channel_code, sku)
);
CREATE UNIQUE INDEX channel_listings_chrt_uidx ON connectors.channel_listings (channel_code, chrt_id)
  WHERE chrt_id IS NOT NULL;
CREATE UNIQUE INDEX channel_listings_item_uidx ON connectors.channel_listings (channel_code, inventory_item_id)
  WHERE inventory_item_id IS NOT NULL;

-- How an external system names an OMS location. system: 'wms' (warehouse code), 'pos' (store code),
-- 'ozon' / 'wildberries' (warehouse id), 'webstore' (Shopify location id), 'cdek' (shipment point).
CREATE TABLE connectors.channel_locations (
  system text NOT NULL,
  location_code text NOT NULL REFERENCES oms.locations,
  external_id text NOT NULL,
  active boolean NOT NULL DEFAULT true,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (system, location_code),
  UNIQUE (system, external_id)
);

-- Carrier pickup points (CDEK-style codes "MSK123": a city hub + a number) the web store and call centre
-- offer, mapped by hub to the seller's own pickup point in that city. Unmapped hubs become courier
-- deliveries to the pickup point's address (see docs/connectors.md).
CREATE TABLE connectors.pickup_point_hubs (
  hub text PRIMARY KEY,                     -- three letters: 'MSK', 'SPB', ...
  location_code text NOT NULL REFERENCES oms.locations
);

-- ---------------------------------------------------------------------------------------------------------
-- where each connector stands
-- ---------------------------------------------------------------------------------------------------------
-- Cursor / watermark per feed ('ozon:postings', 'wildberries:orders', 'webstore:orders', ...). Advanced in
-- the SAME transaction as the payloads it covers, after them: a crash in between re-fetches, never skips.
CREATE TABLE connectors.cursors (
  name text PRIMARY KEY,
  value jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Health of each feed: the last successful poll (ingestion freshness checks) and the last error.
CREATE TABLE connectors.feed_status (
  feed text PRIMARY KEY,                    -- 'ozon', 'wildberries', 'webstore', 'offline', 'wms:MSK1', ...
  last_success_at timestamptz,
  last_error_at timestamptz,
  last_error text,
  last_fetched integer NOT NULL DEFAULT 0,
  total_fetched bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Shopify webhooks received: dedup by X-Shopify-Webhook-Id; rejected (bad signature) ones are kept too,
-- so ops can see attacks or a rotated secret.
CREATE TABLE connectors.webhook_receipts (
  receipt_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source text NOT NULL,                     -- 'webstore'
  webhook_id text,                          -- X-Shopify-Webhook-Id
  topic text,
  verified boolean NOT NULL,
  reason text,                              -- why it was rejected / quarantined
  shop_domain text,
  body_sha256 text NOT NULL,
  body_size integer NOT NULL,
  raw_id bigint,                            -- raw.channel_orders row it produced
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX webhook_receipts_dedup_uidx ON connectors.webhook_receipts (source, webhook_id)
  WHERE verified AND webhook_id IS NOT NULL;
CREATE INDEX webhook_receipts_rejected_idx ON connectors.webhook_receipts (received_at) WHERE NOT verified;

-- Drop-folder files processed (POS end-of-day CSVs): a re-run skips them.
CREATE TABLE connectors.processed_files (
  source text NOT NULL,                     -- 'pos'
  file_name text NOT NULL,
  sha256 text NOT NULL,
  size_bytes bigint NOT NULL,
  rows integer NOT NULL,
  receipts integer NOT NULL,
  quarantined integer NOT NULL,
  summary jsonb,
  processed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (source, file_name)
);

-- ---------------------------------------------------------------------------------------------------------
-- carrier bookings and their documents
-- ---------------------------------------------------------------------------------------------------------
-- One row per shipment booked with a carrier API: the asynchronous request state, then the print forms.
CREATE TABLE connectors.carrier_bookings (
  shipment_id bigint PRIMARY KEY REFERENCES oms.shipments,
  carrier_code text NOT NULL,
  carrier_uuid text NOT NULL,               -- CDEK entity uuid
  request_state text NOT NULL,              -- ACCEPTED | WAITING | SUCCESSFUL | INVALID
  tracking_number text,                     -- CDEK cdek_number
  errors jsonb,
  waybill_print_uuid text,
  label_print_uuid text,
  last_status_code text,
  last_status_at timestamptz,
  final boolean NOT NULL DEFAULT false,     -- delivered / returned / removed: no more polling
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX carrier_bookings_open_idx ON connectors.carrier_bookings (carrier_code, shipment_id) WHERE NOT final;

-- Label (barcode) and waybill PDFs as downloaded from the carrier. Kept in Postgres (bytea) so every
-- process (dashboards, pipelines) reads them through the one database, backups include them, and a label
-- is stored in the same transaction that marks the shipment label_printed.
CREATE TABLE connectors.shipment_documents (
  document_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  shipment_id bigint NOT NULL REFERENCES oms.shipments,
  kind text NOT NULL CHECK (kind IN ('label', 'waybill')),
  carrier_code text NOT NULL,
  print_uuid text NOT NULL,
  content_type text NOT NULL DEFAULT 'application/pdf',
  content bytea NOT NULL,
  sha256 text NOT NULL,
  size_bytes integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (shipment_id, kind)
);

-- ---------------------------------------------------------------------------------------------------------
-- effects delivered by the outbox drain, and available-to-sell pushes
-- ---------------------------------------------------------------------------------------------------------
-- One row per outbox effect whose external call succeeded, written before the outbox row is completed:
-- a drain that dies between the two finds the key here and does not call the outside world again.
CREATE TABLE connectors.effect_log (
  idempotency_key text PRIMARY KEY,
  effect text NOT NULL,
  outbox_id bigint,
  outcome text NOT NULL,                    -- 'sent', 'recorded', 'skipped', ...
  note text,
  result jsonb,
  done_at timestamptz NOT NULL DEFAULT now()
);

-- Last available-to-sell value pushed per (channel, location, sku); only changes are pushed.
-- status: pushed (verified by the response) | unverified (accepted, no proof) | throttled (retry after
-- next_attempt_at) | failed (error kept).
CREATE TABLE connectors.ats_push_state (
  channel_code text NOT NULL,
  location_code text NOT NULL,
  sku text NOT NULL,
  desired_qty integer NOT NULL,
  pushed_qty integer,
  status text NOT NULL CHECK (status IN ('pushed', 'unverified', 'throttled', 'failed', 'pending')),
  verified boolean NOT NULL DEFAULT false,
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz,
  last_error text,
  pushed_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (channel_code, location_code, sku)
);
CREATE INDEX ats_push_state_retry_idx ON connectors.ats_push_state (channel_code, next_attempt_at)
  WHERE status IN ('throttled', 'failed', 'pending');

-- ---------------------------------------------------------------------------------------------------------
-- dashboards read the feed health, carrier bookings and label PDFs (role: see 0006_dashboard_role.sql; it is
-- created here too when this migration runs first — both creations tolerate each other)
-- ---------------------------------------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oms_dashboard') THEN
        CREATE ROLE oms_dashboard NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END;
$$;
GRANT USAGE ON SCHEMA connectors TO oms_dashboard;
GRANT SELECT ON ALL TABLES IN SCHEMA connectors TO oms_dashboard;

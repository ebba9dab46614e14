-- The 1C exchange (docs/onec.md): the OMS is "the site" of 1C's CommerceML 2 exchange. 1C signs in
-- (checkauth → a session cookie), takes the documents changed since its last confirmed export (query), confirms
-- them (success), and uploads its changed orders and the catalogue (file + import).
CREATE TABLE oms.onec_sessions (
  session_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  cookie_hash text NOT NULL UNIQUE,              -- sha256 of the cookie value: the value itself is never stored
  login text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX onec_sessions_expiry_idx ON oms.onec_sessions (expires_at);

-- Requests to export again everything changed since a time (`oms onec resend --since`), done when the batch that
-- carried them is confirmed.
CREATE TABLE oms.onec_resends (
  resend_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  since timestamptz NOT NULL,
  from_event_id bigint NOT NULL,                 -- the first order event at or after `since`
  requested_by text NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT now(),
  done_at timestamptz
);

-- One answer to a `query`: the order events it covers (from_event_id, to_event_id]. 'sent' until 1C confirms it
-- ('confirmed': the confirmed watermark moves to to_event_id); a later query before the confirmation sends
-- everything again from the last confirmed watermark and supersedes it, so nothing is lost or skipped.
CREATE TABLE oms.onec_export_batches (
  batch_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  session_id bigint REFERENCES oms.onec_sessions ON DELETE SET NULL,
  from_event_id bigint NOT NULL,
  to_event_id bigint NOT NULL CHECK (to_event_id >= from_event_id),
  resend_ids bigint[] NOT NULL DEFAULT '{}',
  state text NOT NULL DEFAULT 'sent' CHECK (state IN ('sent', 'confirmed', 'superseded')),
  documents integer NOT NULL DEFAULT 0,
  bytes integer NOT NULL DEFAULT 0,
  sha256 text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  confirmed_at timestamptz,
  CHECK ((state = 'confirmed') = (confirmed_at IS NOT NULL))
);
CREATE INDEX onec_export_batches_state_idx ON oms.onec_export_batches (state, batch_id);

-- What each batch contained: one row per document.
CREATE TABLE oms.onec_export_documents (
  batch_id bigint NOT NULL REFERENCES oms.onec_export_batches ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('order', 'payment', 'return')),
  entity_id bigint NOT NULL,                     -- order_id, payment_id or return_id
  document_id text NOT NULL,                     -- the Ид 1C knows it by
  amount numeric(14,2) NOT NULL,
  PRIMARY KEY (batch_id, kind, entity_id)
);
CREATE INDEX onec_export_documents_entity_idx ON oms.onec_export_documents (kind, entity_id);

-- A file 1C is uploading (`mode=file`, possibly in several parts), until it is imported.
CREATE TABLE oms.onec_uploads (
  upload_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  session_id bigint NOT NULL REFERENCES oms.onec_sessions ON DELETE CASCADE,
  exchange_type text NOT NULL CHECK (exchange_type IN ('sale', 'catalog')),
  filename text NOT NULL,
  content bytea NOT NULL DEFAULT '',
  parts integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (session_id, exchange_type, filename)
);

-- Every import (`mode=import`): what the file was (a digest: the same file again changes nothing) and how it went.
CREATE TABLE oms.onec_imports (
  import_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  session_id bigint REFERENCES oms.onec_sessions ON DELETE SET NULL,
  exchange_type text NOT NULL CHECK (exchange_type IN ('sale', 'catalog')),
  filename text NOT NULL,
  sha256 text NOT NULL,
  bytes integer NOT NULL,
  state text NOT NULL CHECK (state IN ('applied', 'failed')),
  message text NOT NULL,
  result jsonb NOT NULL DEFAULT '{}',            -- per document: applied, unchanged, refused (and why), noted
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX onec_imports_applied_uidx ON oms.onec_imports (exchange_type, filename, sha256)
  WHERE state = 'applied';
CREATE INDEX onec_imports_created_idx ON oms.onec_imports (created_at);

-- 1C's Ид of a catalogue item → our SKU (import.xml names it; offers.xml refers to it by Ид only).
CREATE TABLE oms.onec_products (
  onec_id text PRIMARY KEY,
  sku text NOT NULL REFERENCES oms.products,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The dashboards read the exchange's state; they never write it (migration 0016).
GRANT SELECT ON oms.onec_resends, oms.onec_export_batches, oms.onec_export_documents, oms.onec_imports,
  oms.onec_products TO oms_dashboard;

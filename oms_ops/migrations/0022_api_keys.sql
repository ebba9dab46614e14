-- API keys of other systems (a B2B portal, an ERP, a courier app) reading orders and stock and placing orders
-- through the public part of the OMS API (docs/api.md, "Public API"). People sign in with a password and get a
-- session; systems hold a long-lived key instead, limited to scopes, revocable at once, never stored in clear:
-- the key is shown once when created (`oms api-keys create`) and only its SHA-256 is kept.

CREATE TABLE oms.api_keys (
  key_id text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),      -- the key's public part (oms_<key_id>_<secret>)
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),      -- whose system it is
  secret_sha256 text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
  scopes text[] NOT NULL CHECK (
      cardinality(scopes) > 0
      AND scopes <@ ARRAY['orders:read', 'orders:write', 'stock:read', 'customer:read']::text[]),
  channel_code text REFERENCES oms.channels,                       -- orders placed with the key land here
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  revoked_by text,
  revoked_at timestamptz,
  last_used_at timestamptz,
  CHECK (NOT ('orders:write' = ANY (scopes)) OR channel_code IS NOT NULL),
  CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

-- The dashboards may list the keys (who has access, since when, last used), never their hashes.
GRANT SELECT (key_id, name, scopes, channel_code, created_by, created_at, expires_at, revoked_by, revoked_at,
              last_used_at) ON oms.api_keys TO oms_dashboard;

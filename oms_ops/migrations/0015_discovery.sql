-- Channel discovery: what each channel's account lists (warehouses/locations and sellable items), read through
-- the channel's own endpoints, and how it maps onto OMS locations and SKUs (docs/connectors.md "Discovery").
--
-- Discovery fills these tables and, for every row that maps, the tables the connectors read
-- (connectors.channel_locations / connectors.channel_listings). A mapping an operator set or confirmed
-- (reviewed_at not null) is never changed by a later discovery run; rows the account no longer lists are
-- marked inactive, not deleted.

CREATE TABLE connectors.discovered_locations (
  system text NOT NULL,                       -- channel code (ozon, wildberries, webstore)
  external_id text NOT NULL,                  -- the channel's warehouse / location id
  name text NOT NULL,
  city text,
  address text,
  kind text,                                  -- warehouse / store when the channel says
  listed boolean NOT NULL DEFAULT true,       -- false: the last discovery run did not see it
  location_code text REFERENCES oms.locations,-- the OMS location it stands for; NULL: unmapped
  match_rule text CHECK (match_rule IN ('name', 'external_name', 'similar_name', 'city', 'operator')),
  note text,                                  -- why it is unmapped (no candidate, several, taken)
  reviewed_by text,
  reviewed_at timestamptz,
  first_seen timestamptz NOT NULL DEFAULT now(),
  last_seen timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (system, external_id)
);

CREATE TABLE connectors.discovered_listings (
  channel_code text NOT NULL,
  item_key text NOT NULL,                     -- the channel's own key of the item (chrtId, inventory item, offer)
  article text,                               -- the seller's article as the channel holds it
  barcode text,
  name text,
  offer_id text,
  product_id bigint,
  channel_sku bigint,
  chrt_id bigint,
  variant_id bigint,
  inventory_item_id bigint,
  listed boolean NOT NULL DEFAULT true,
  sku text REFERENCES oms.products,           -- the OMS SKU it sells; NULL: unmatched
  match_rule text CHECK (match_rule IN ('article', 'barcode', 'operator')),
  note text,
  reviewed_by text,
  reviewed_at timestamptz,
  first_seen timestamptz NOT NULL DEFAULT now(),
  last_seen timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (channel_code, item_key)
);
CREATE INDEX discovered_listings_unmatched_idx ON connectors.discovered_listings (channel_code)
  WHERE sku IS NULL AND listed;

CREATE TABLE connectors.discovery_runs (
  run_id bigserial PRIMARY KEY,
  channel_code text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  locations integer,
  locations_mapped integer,
  listings integer,
  listings_matched integer,
  error text
);
CREATE INDEX discovery_runs_channel_idx ON connectors.discovery_runs (channel_code, started_at DESC);

-- Operators correct a mapping from the dashboards (Operations → Channel mappings). The dashboards' role gets
-- no write grant on the connectors schema: it calls these two functions, which check their arguments and run
-- with the migrating role's rights (SECURITY DEFINER, fixed search_path).
CREATE FUNCTION connectors.map_discovered_location(p_system text, p_external_id text, p_location text,
                                                   p_actor text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d connectors.discovered_locations;
  taken text;
BEGIN
  IF p_actor IS NULL OR btrim(p_actor) = '' THEN
    RAISE EXCEPTION 'an operator name is required' USING ERRCODE = '22023';
  END IF;
  SELECT * INTO d FROM connectors.discovered_locations
   WHERE system = p_system AND external_id = p_external_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no discovered location % of %', p_external_id, p_system USING ERRCODE = '22023';
  END IF;
  IF p_location IS NOT NULL THEN
    PERFORM 1 FROM oms.locations WHERE location_code = p_location AND kind IN ('warehouse', 'store');
    IF NOT FOUND THEN
      RAISE EXCEPTION 'location % is not an OMS warehouse or store', p_location USING ERRCODE = '22023';
    END IF;
    SELECT external_id INTO taken FROM connectors.discovered_locations
     WHERE system = p_system AND location_code = p_location AND external_id <> p_external_id;
    IF FOUND THEN
      RAISE EXCEPTION '% is already mapped to % % (unmap it first)', p_location, p_system, taken
        USING ERRCODE = '23505';
    END IF;
  END IF;
  UPDATE connectors.discovered_locations
     SET location_code = p_location, match_rule = CASE WHEN p_location IS NULL THEN NULL ELSE 'operator' END,
         note = CASE WHEN p_location IS NULL THEN 'unmapped by ' || p_actor END,
         reviewed_by = p_actor, reviewed_at = now()
   WHERE system = p_system AND external_id = p_external_id;
  DELETE FROM connectors.channel_locations WHERE system = p_system AND external_id = p_external_id;
  IF p_location IS NOT NULL THEN
    INSERT INTO connectors.channel_locations (system, location_code, external_id)
    VALUES (p_system, p_location, p_external_id)
    ON CONFLICT (system, location_code) DO UPDATE
      SET external_id = excluded.external_id, active = true, updated_at = now();
  END IF;
  RETURN coalesce(p_location, '');
END;
$$;

CREATE FUNCTION connectors.map_discovered_listing(p_channel text, p_item_key text, p_sku text, p_actor text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d connectors.discovered_listings;
  taken text;
BEGIN
  IF p_actor IS NULL OR btrim(p_actor) = '' THEN
    RAISE EXCEPTION 'an operator name is required' USING ERRCODE = '22023';
  END IF;
  SELECT * INTO d FROM connectors.discovered_listings
   WHERE channel_code = p_channel AND item_key = p_item_key FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no discovered item % of %', p_item_key, p_channel USING ERRCODE = '22023';
  END IF;
  IF p_sku IS NOT NULL THEN
    PERFORM 1 FROM oms.products WHERE sku = p_sku;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'SKU % is not in the catalog', p_sku USING ERRCODE = '22023';
    END IF;
    SELECT item_key INTO taken FROM connectors.discovered_listings
     WHERE channel_code = p_channel AND sku = p_sku AND item_key <> p_item_key AND listed;
    IF FOUND THEN
      RAISE EXCEPTION 'SKU % is already sold as % item % (unmatch it first)', p_sku, p_channel, taken
        USING ERRCODE = '23505';
    END IF;
  END IF;
  UPDATE connectors.discovered_listings
     SET sku = p_sku, match_rule = CASE WHEN p_sku IS NULL THEN NULL ELSE 'operator' END,
         note = CASE WHEN p_sku IS NULL THEN 'unmatched by ' || p_actor END,
         reviewed_by = p_actor, reviewed_at = now()
   WHERE channel_code = p_channel AND item_key = p_item_key;
  -- the item's ids leave the SKU it was matched to (they are unique per channel in channel_listings)
  IF d.sku IS NOT NULL AND d.sku IS DISTINCT FROM p_sku THEN
    DELETE FROM connectors.channel_listings WHERE channel_code = p_channel AND sku = d.sku;
  END IF;
  IF p_sku IS NOT NULL THEN
    INSERT INTO connectors.channel_listings (channel_code, sku, offer_id, product_id, channel_sku, chrt_id,
                                             variant_id, inventory_item_id, barcode)
    VALUES (p_channel, p_sku, d.offer_id, d.product_id, d.channel_sku, d.chrt_id, d.variant_id,
            d.inventory_item_id, d.barcode)
    ON CONFLICT (channel_code, sku) DO UPDATE
      SET offer_id = excluded.offer_id, product_id = excluded.product_id, channel_sku = excluded.channel_sku,
          chrt_id = excluded.chrt_id, variant_id = excluded.variant_id,
          inventory_item_id = excluded.inventory_item_id, barcode = excluded.barcode, active = true,
          updated_at = now();
  END IF;
  RETURN coalesce(p_sku, '');
END;
$$;

REVOKE ALL ON FUNCTION connectors.map_discovered_location(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION connectors.map_discovered_listing(text, text, text, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA connectors TO oms_dashboard;
GRANT SELECT ON connectors.discovered_locations, connectors.discovered_listings, connectors.discovery_runs
  TO oms_dashboard;
GRANT EXECUTE ON FUNCTION connectors.map_discovered_location(text, text, text, text) TO oms_dashboard;
GRANT EXECUTE ON FUNCTION connectors.map_discovered_listing(text, text, text, text) TO oms_dashboard;

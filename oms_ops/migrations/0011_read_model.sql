-- The read model of operations: documents through one narrow function.
--
-- The dbt views in schema ops (docs/analytics.md) are the one definition of every operational figure; the
-- dashboards read them as the least-privilege role oms_dashboard (0006; the views grant it SELECT when dbt
-- builds them). ops.ops_shipment_documents lists which labels and waybills exist, without their bytes. The
-- bytes of ONE document come through this function, which runs with its owner's rights: the role may fetch
-- a document it names by shipment and kind, but it cannot read the document table (carrier labels carry the
-- customer's name, phone and address), so 0005's blanket SELECT on the connectors schema is taken back for it.
CREATE FUNCTION connectors.shipment_document_content(p_shipment_id bigint, p_kind text)
RETURNS bytea
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.content FROM connectors.shipment_documents AS d
    WHERE d.shipment_id = p_shipment_id AND d.kind = p_kind
$$;
COMMENT ON FUNCTION connectors.shipment_document_content(bigint, text) IS
  'the stored bytes of one carrier print form (kind label or waybill) of a shipment; NULL when none is stored';

REVOKE ALL ON FUNCTION connectors.shipment_document_content(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION connectors.shipment_document_content(bigint, text) TO oms_dashboard;
REVOKE SELECT ON connectors.shipment_documents FROM oms_dashboard;

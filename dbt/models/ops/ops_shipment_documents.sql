-- The carrier print forms stored per shipment (connectors.shipment_documents: labels and waybills as
-- downloaded from the carrier), without their bytes: which documents exist, their size and a file name.
-- The bytes of one document come through the function connectors.shipment_document_content(shipment_id,
-- kind) (migration 0011), so the dashboards' role needs no access to the document table.
select
    d.document_id,
    d.shipment_id,
    s.shipment_number,
    s.order_id,
    d.kind,
    d.carrier_code,
    d.content_type,
    d.size_bytes,
    d.sha256,
    d.created_at,
    d.kind || '-' || s.shipment_number || case when d.content_type = 'application/pdf' then '.pdf' else '' end
        as file_name
from {{ source('connectors_live', 'shipment_documents') }} as d
inner join {{ source('oms_live', 'shipments') }} as s on d.shipment_id = s.shipment_id

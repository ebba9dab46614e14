-- Parcels packed and booked but not yet collected by their carrier (state created / label_printed), with
-- how long they have waited and whether the carrier's label is stored. A store handing over its own stock
-- (carrier 'self') waits for the customer, not a carrier, and is not listed.
select
    s.shipment_id,
    s.shipment_number,
    s.order_id,
    o.order_number,
    o.channel_code,
    s.location_code,
    s.carrier_code,
    s.state as shipment_status,
    s.tracking_number,
    s.tracking_number is not null as has_tracking_number,
    exists (
        select 1 from {{ ref('ops_shipment_documents') }} as d
        where d.shipment_id = s.shipment_id and d.kind = 'label'
    ) as has_label,
    s.packages,
    s.weight_g,
    s.created_at,
    s.label_printed_at,
    round(cast(extract(epoch from (now() - s.created_at)) / 3600.0 as numeric), 1) as hours_waiting
from {{ source('oms_live', 'shipments') }} as s
inner join {{ source('oms_live', 'orders') }} as o on s.order_id = o.order_id
where s.state in ('created', 'label_printed') and s.carrier_code <> 'self'

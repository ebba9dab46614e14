-- Planned carrier cost and locations are parsed out of the decision's JSON here (no joins).
select
    decision_id,
    order_id,
    kind as decision_kind,
    outcome,
    rule_name,
    split_allowed as is_split_allowed,
    locations,
    if(length(locations) > 0, locations[1], null) as first_location_code,
    length(JSONExtractArrayRaw(shipments)) as planned_shipment_count,
    arraySum(
        arrayMap(s -> toDecimal128OrZero(JSONExtractRaw(s, 'cost'), 4), JSONExtractArrayRaw(shipments))
    ) as planned_shipping_cost,
    ship_by as ship_by_at,
    promise_date,
    eta as eta_date,
    reason,
    created_at as decided_at,
    _loaded_at
from {{ source('oms', 'allocation_decisions') }} final

select
    refund_id,
    order_id,
    return_id,
    amount,
    currency,
    reason,
    state as refund_status,
    requested_at,
    completed_at,
    updated_at,
    _loaded_at
from {{ source('oms', 'refunds') }} final

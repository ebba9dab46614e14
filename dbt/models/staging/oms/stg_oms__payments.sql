select
    payment_id,
    order_id,
    provider,
    method as payment_method,
    amount,
    currency,
    state as payment_status,
    paid_at,
    created_at,
    updated_at,
    _loaded_at
from {{ source('oms', 'payments') }} final

{#- Change tracking shared by the incremental ClickHouse models.

    Every raw row carries _loaded_at (set by ClickHouse when replication inserted it). int_orders_changed
    keeps, per order, the latest _loaded_at of any row of that order; each incremental model stores that
    value on its rows, so "everything up to max(_loaded_at) of this model is processed" holds, and the next
    run picks the orders whose change is newer — minus a lookback that absorbs inserts committing late.
-#}

{% macro incremental_watermark(column='_loaded_at') -%}
    {%- if is_incremental() -%}
        (select coalesce(max({{ column }}), toDateTime64(0, 6, 'UTC')) from {{ this }})
            - toIntervalSecond({{ var('incremental_lookback_seconds') }})
    {%- else -%}
        toDateTime64(0, 6, 'UTC')
    {%- endif -%}
{%- endmacro %}

{#- (order_id, _loaded_at) of the orders changed since this model's watermark. -#}
{% macro changed_orders() -%}
    select order_id, max(change_loaded_at) as _loaded_at
    from (
        select order_id, _loaded_at as change_loaded_at
        from {{ ref('int_orders_changed') }}
        {% if is_incremental() -%} where _loaded_at > {{ incremental_watermark() }} {%- endif %}
    )
    group by order_id
{%- endmacro %}

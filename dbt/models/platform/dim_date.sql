{{
    config(
        materialized='incremental',
        unique_key='date_day',
        incremental_strategy='delete+insert',
        engine='MergeTree()',
        order_by='date_day',
        partition_by='toYear(date_day)',
    )
}}
-- Reporting calendar. Incremental: each run only adds the days after the last one already built, so a
-- scheduled run is cheap and past rows (with their built_at) stay untouched.

{% set start_date = var('calendar_start') %}
{% if is_incremental() %}
    {% set max_day = run_query("select max(date_day) from " ~ this).columns[0].values()[0] %}
    {% set start_date = (max_day + modules.datetime.timedelta(days=1)).isoformat() if max_day else start_date %}
{% endif %}

with days as (
    {{ day_series(start_date, calendar_end_date()) }}
)

select
    date_day,
    extract(year from date_day) as year_number,
    extract(month from date_day) as month_number,
    {{ iso_day_of_week('date_day') }} as iso_day_of_week,
    {{ iso_day_of_week('date_day') }} >= 6 as is_weekend,
    {{ dbt.current_timestamp() }} as built_at
from days

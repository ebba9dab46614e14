{#- Time arithmetic that differs between engines (STYLE.md: only in adapter.dispatch macros). -#}

{#- Business date of a UTC timestamp in the reporting time zone (var reporting_timezone). -#}
{% macro business_date(column) -%}
    {{ return(adapter.dispatch('business_date', 'oms')(column)) }}
{%- endmacro %}

{% macro default__business_date(column) -%}
    cast(({{ column }} at time zone '{{ var("reporting_timezone") }}') as date)
{%- endmacro %}

{% macro clickhouse__business_date(column) -%}
    toDate({{ column }}, '{{ var("reporting_timezone") }}')
{%- endmacro %}

{#- Whole seconds from one timestamp to another, computed on the timestamps (never on yyyymmdd numbers). -#}
{% macro seconds_between(start_column, end_column) -%}
    {{ return(adapter.dispatch('seconds_between', 'oms')(start_column, end_column)) }}
{%- endmacro %}

{% macro default__seconds_between(start_column, end_column) -%}
    cast(floor(extract(epoch from ({{ end_column }} - {{ start_column }}))) as bigint)
{%- endmacro %}

{% macro clickhouse__seconds_between(start_column, end_column) -%}
    dateDiff('second', {{ start_column }}, {{ end_column }})
{%- endmacro %}

{#- The end of a business date (exclusive), as a UTC timestamp: a promise "by date D" is kept before it. -#}
{% macro end_of_business_date(date_column) -%}
    {{ return(adapter.dispatch('end_of_business_date', 'oms')(date_column)) }}
{%- endmacro %}

{% macro default__end_of_business_date(date_column) -%}
    ((cast({{ date_column }} as timestamp) + interval '1 day') at time zone '{{ var("reporting_timezone") }}')
{%- endmacro %}

{% macro clickhouse__end_of_business_date(date_column) -%}
    toDateTime64(toDateTime({{ date_column }} + 1, '{{ var("reporting_timezone") }}'), 6, 'UTC')
{%- endmacro %}

{#- A percentage that is NULL (not 0) when nothing is in the denominator. -#}
{% macro safe_pct(numerator, denominator) -%}
    case when {{ denominator }} = 0 then null else 100.0 * {{ numerator }} / {{ denominator }} end
{%- endmacro %}

{#- Engine-specific SQL lives only in adapter.dispatch macros (STYLE.md). -#}

{% macro calendar_end_date() -%}
    {{ return(var('calendar_end') or (modules.datetime.date.today() + modules.datetime.timedelta(days=30)).isoformat()) }}
{%- endmacro %}

{% macro day_series(start_date, end_date) -%}
    {{ return(adapter.dispatch('day_series', 'oms')(start_date, end_date)) }}
{%- endmacro %}

{% macro default__day_series(start_date, end_date) -%}
    select cast(d as date) as date_day
    from generate_series(cast('{{ start_date }}' as date), cast('{{ end_date }}' as date), interval '1 day') as d
{%- endmacro %}

{% macro clickhouse__day_series(start_date, end_date) -%}
    select toDate('{{ start_date }}') + number as date_day
    from numbers(toUInt64(greatest(0, dateDiff('day', toDate('{{ start_date }}'), toDate('{{ end_date }}')) + 1)))
{%- endmacro %}

{% macro iso_day_of_week(column) -%}
    {{ return(adapter.dispatch('iso_day_of_week', 'oms')(column)) }}
{%- endmacro %}

{% macro default__iso_day_of_week(column) -%}
    cast(extract(isodow from {{ column }}) as integer)
{%- endmacro %}

{% macro clickhouse__iso_day_of_week(column) -%}
    toInt32(toDayOfWeek({{ column }}))
{%- endmacro %}

-- The KPI glossary, one row per KPI, for dashboards to show definitions next to the numbers
-- (mart_column: the agg_kpi_daily column(s) holding the KPI).
select
    kpi_code,
    kpi_name,
    numerator,
    denominator,
    grain,
    unit,
    source,
    mart_column
from {{ ref('kpi_glossary') }}

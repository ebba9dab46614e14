-- The KPI glossary, one row per KPI, for dashboards to show definitions next to the numbers
-- (mart_column: the agg_kpi_daily column(s) holding the KPI; numerator_column / denominator_column: the
-- agg_kpi_daily columns a rate is re-computed from when the KPI page rolls cells up).
select
    kpi_code,
    kpi_name,
    numerator,
    denominator,
    grain,
    unit,
    source,
    mart_column,
    numerator_column,
    denominator_column
from {{ ref('kpi_glossary') }}

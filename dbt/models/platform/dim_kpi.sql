-- The KPI glossary, one row per KPI, for dashboards to show definitions next to the numbers.
select
    kpi_code,
    kpi_name,
    numerator,
    denominator,
    grain,
    unit,
    source
from {{ ref('kpi_glossary') }}

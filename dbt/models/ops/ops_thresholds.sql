-- The thresholds the read model applies, as data the dashboards can show next to the figures (one row).
-- at_risk_hours (var at_risk_hours): an open order whose deadline is this close is at risk (ops_orders_at_risk).
select cast({{ var('at_risk_hours') }} as numeric) as at_risk_hours

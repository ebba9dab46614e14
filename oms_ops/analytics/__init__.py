"""Analytics: replication of the system of record into ClickHouse and helpers for the dbt project.

``replication`` copies Postgres tables into ClickHouse raw tables incrementally and idempotently;
``dbt`` builds the environment dbt needs to run the marts (ClickHouse) and the live ops views (Postgres).
Orchestration (schedules, assets, checks) lives in ``pipelines/defs/analytics``; this package has no Dagster
dependency so it can be called from tests, benchmarks and the CLI alike.
"""

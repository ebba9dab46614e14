"""Embedded ClickHouse server: one process that owns one chdb data directory and speaks ClickHouse's HTTP protocol.

Why this exists: the project's analytics default to the embedded ClickHouse engine (chdb) so that a fresh machine
needs no ClickHouse install. chdb allows one engine (one data path) per process, yet dbt-clickhouse, Dagster
assets, the dashboards and the tests all run in different processes and must see the same data. So exactly one
small process owns the data directory and serves ClickHouse's HTTP interface on 127.0.0.1; every client connects
to it exactly as it would to a real server (clickhouse-connect's HTTP client, dbt-clickhouse), and pointing
``OMS_CLICKHOUSE_URL`` at a real server or cluster is a configuration change, not a code change.

The modules, by concern (docs/clickhouse.md is the user-facing page):

* :mod:`.supervisor` — start a server as a detached process, ping it, stop it (used by ``oms up``, tests, benches);
* :mod:`.cli` / ``__main__`` — ``python -m oms_ops.platform.clickhouse --data-dir DIR``;
* :mod:`.lifecycle` — the server process: data-directory lock, signals, housekeeping, clean shutdown;
* :mod:`.server` — the HTTP server and request handler: streaming inserts and results, errors;
* :mod:`.engine` — the chdb engine, its format catalogue and the session registry;
* :mod:`.sessions` — sessions and the per-query database/settings ClickHouse's HTTP interface promises;
* :mod:`.transfer` — request bodies (Content-Length, chunked) and Content-Encodings both ways;
* :mod:`.formats` — streamable formats, content types, Native headers, multipart forms;
* :mod:`.sql` — the SQL scanning that finds an INSERT's data and a FORMAT clause;
* :mod:`.protocol` — defaults, URL parameter classes and errors in ClickHouse's wire shape.
"""

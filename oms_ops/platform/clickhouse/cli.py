"""Command line of the embedded ClickHouse server: ``python -m oms_ops.platform.clickhouse --data-dir DIR``.

Parses the options, sets up logging and runs :func:`~oms_ops.platform.clickhouse.lifecycle.serve`. Expected
start failures (directory already served, port taken) end with exit code 1 and one clear log line.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
from pathlib import Path

from oms_ops.platform.clickhouse.lifecycle import serve
from oms_ops.platform.clickhouse.protocol import DEFAULT_HOST, DEFAULT_PORT, truthy
from oms_ops.platform.clickhouse.users import read_users_file

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run the server until it is stopped; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m oms_ops.platform.clickhouse",
        description="Serve a chdb data directory over ClickHouse's HTTP interface.",
    )
    parser.add_argument(
        "--data-dir", required=True, type=Path, help="chdb data directory (owned by this process)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default 8123; 0 picks a free one)"
    )
    parser.add_argument(
        "--users-file",
        type=Path,
        default=os.environ.get("OMS_CLICKHOUSE_USERS_FILE") or None,
        help="JSON file of the users who may connect (oms_ops.platform.clickhouse.users; "
        "env OMS_CLICKHOUSE_USERS_FILE); required: the server never runs without credentials",
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--watch-pid", type=int, help="stop when the process with this pid exits")
    parser.add_argument(
        "--compress-loopback",
        action="store_true",
        default=truthy(os.environ.get("OMS_CLICKHOUSE_COMPRESS_LOOPBACK")),
        help="compress responses to clients on 127.0.0.1 as well (env OMS_CLICKHOUSE_COMPRESS_LOOPBACK=1)",
    )
    parser.add_argument("--log-level", default=os.environ.get("OMS_CLICKHOUSE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.users_file is None:
        logger.error("no --users-file: the server does not run without users and passwords")
        return 1
    try:
        users = read_users_file(args.users_file)
    except ValueError as exc:
        logger.error("%s", exc)
        return 1
    try:
        clean = serve(
            args.data_dir,
            args.host,
            args.port,
            users=users,
            port_file=args.port_file,
            watch_pid=args.watch_pid,
            compress_loopback=args.compress_loopback,
        )
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            logger.error("port %s on %s is already in use", args.port, args.host)
            return 1
        raise
    if not clean:
        # Threads are still inside chdb; interpreter teardown would run the engine's destructors under them.
        logging.shutdown()
        os._exit(0)
    return 0

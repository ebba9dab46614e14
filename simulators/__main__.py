"""Runner: ``python -m simulators --seed 42 --rate 30 --speed 60 --base-port 0 --state-dir DIR --webhook-url URL``.

``--credentials @FILE`` gives the simulators their API keys, tokens and the web store's webhook secret
(``{"shopify": {"webhook_secret": …}, …}``, merged into ``--options``); ``oms demo`` generates them into
``$OMS_HOME/secrets`` so that no public default stands in for them. A file, not an inline value: a command
line is visible to every user of the host. Without it the simulators use their built-in test credentials.

Starts every simulator in this process, writes ``DIR/simulators.json`` (base URLs, credentials, clock, network)
once all servers accept connections, and stops cleanly on SIGTERM/SIGINT (removing the manifest, so nobody
connects to dead ports). The demo launcher waits for the manifest to appear, then points the OMS at it.

The outside world outlives the runner, as real services outlive our restarts: each simulator's state
(bookings, orders, stock, returns, id counters) is kept in ``DIR/state/`` and taken back at the next start,
and the simulated clock goes on from where it stopped. ``--fresh`` starts a new world instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from simulators.clock import parse_rfc3339
from simulators.generator import PROFILES
from simulators.stack import MANIFEST_NAME, SIMULATOR_NAMES, start_simulators


def _parse_faults(value: str | None) -> dict:
    if not value:
        return {}
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    data = json.loads(text)
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("--faults expects {simulator: [rules]}")
    return data


def _parse_json_arg(raw: str) -> dict:
    """JSON given inline or as @path."""
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    value = json.loads(text)
    if not isinstance(value, dict):
        raise SystemExit("--options: expected a JSON object keyed by simulator name")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulators", description="Run the external-system simulators."
    )
    p.add_argument("--seed", type=int, default=42, help="seed of catalog, orders and faults (default 42)")
    p.add_argument("--rate", type=float, default=30.0, help="mean orders per simulated minute per channel")
    p.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default="daily",
        help="demand over the clock: daily (Moscow day curve, shops 10-22) or steady (same at every hour)",
    )
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    p.add_argument("--start", help="simulated start time, RFC 3339 (default: now)")
    p.add_argument("--n-skus", type=int, default=200, help="catalog size (default 200)")
    p.add_argument("--base-port", type=int, default=0, help="first port (ozon); 0 = free ports")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".oms/simulators"),
        help="manifest, POS drop dir and the simulators' saved state (state/)",
    )
    p.add_argument(
        "--fresh", action="store_true", help="discard the saved state and start a new world (same seed)"
    )
    p.add_argument("--webhook-url", help="where the web store POSTs its order webhooks")
    p.add_argument("--only", nargs="*", choices=SIMULATOR_NAMES, help="run only these simulators")
    p.add_argument(
        "--faults", help='initial faults as JSON or @file: {"ozon": [{"kind": "rate_limit", ...}]}'
    )
    p.add_argument(
        "--options",
        help='constructor options per simulator as JSON or @file, e.g. {"cdek": {"transit_scale": 0.01}}',
    )
    p.add_argument(
        "--credentials",
        help='credentials per simulator as @file (or JSON), e.g. {"shopify": {"webhook_secret": "..."}}',
    )
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    options = _parse_json_arg(args.options) if args.options else {}
    if args.credentials:
        for name, creds in _parse_json_arg(args.credentials).items():
            options[name] = {**options.get(name, {}), **creds}

    stack = start_simulators(
        seed=args.seed,
        rate=args.rate,
        profile=args.profile,
        speed=args.speed,
        start=parse_rfc3339(args.start) if args.start else None,
        n_skus=args.n_skus,
        state_dir=args.state_dir,
        webhook_url=args.webhook_url,
        base_port=args.base_port,
        host=args.host,
        only=args.only,
        faults=_parse_faults(args.faults),
        options=options or None,
        persist=True,
        fresh=args.fresh,
    )
    manifest = args.state_dir / MANIFEST_NAME
    try:
        stack.write_manifest(manifest)
        print(json.dumps({"manifest": str(manifest), "urls": stack.urls}), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        stack.stop()
        manifest.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

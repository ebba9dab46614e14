"""The 1C exchange for the entry points (the API's ``/1c_exchange``, ``oms onec``): each a call of
:mod:`oms_ops.onec.exchange` (docs/onec.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from oms_ops.onec import exchange
from oms_ops.onec.config import ExchangeConfig, load_config
from oms_ops.onec.exchange import Answer, Request

__all__ = ["Answer", "ExchangeConfig", "Request", "answer", "load_config", "request_resend", "status"]


def answer(conn: psycopg.Connection, config: ExchangeConfig, req: Request) -> Answer:
    """One call of 1C answered (plain text or the orders document)."""
    return exchange.handle(conn, config, req)


def status(conn: psycopg.Connection, *, limit: int = 10) -> dict[str, Any]:
    return exchange.status(conn, limit=limit)


def request_resend(conn: psycopg.Connection, since: datetime, *, actor: str) -> int:
    return exchange.request_resend(conn, since, actor=actor)

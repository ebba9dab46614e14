"""The 1C exchange's protocol state: 1C polls one URL and the OMS answers as "the site" (docs/onec.md).

Why batches confirmed by 1C: 1C takes the orders with ``type=sale&mode=query`` and says it has loaded them with
``mode=success`` only afterwards. A connection that breaks in between must not lose a document, and one that
succeeds must not send it twice. So every ``query`` is recorded as an export batch covering the order events
``(from_event_id, to_event_id]`` — the documents are the orders, payments and returns those events touched, as
they are now — and only ``success`` moves the confirmed watermark to ``to_event_id``. A ``query`` before the
last batch was confirmed starts again from the confirmed watermark (the unconfirmed batch is superseded), so an
unconfirmed batch is sent again next time and nothing is skipped. Events younger than ``settle_s`` wait for
the next query: an event id is handed out at insert, and a transaction still open when the query ran could
otherwise commit an id below the watermark.

Imports (``mode=file`` in parts, then ``mode=import``): 1C's changed orders — «Заказ оплачен» becomes a payment
(provider ``1c``, one per order: a re-sent file records nothing twice), «Отменен» cancels the order through
``orders.cancel_orders`` when its state allows (a refused cancellation is kept in the quarantine with the reason,
for ops), any other difference is noted in the import's result. The catalogue (``type=catalog``: import.xml →
products and their names, offers.xml → prices, and stock only when 1C is the stock master) is applied the same
way. Each document is applied on its own (a savepoint): a bad one is quarantined with its reason, the others
apply; a file that cannot be read at all applies nothing. The same file imported twice changes nothing.

Every answer is plain text: ``success``, ``progress`` or ``failure`` on the first line, then a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from oms_ops.errors import OmsError, ValidationFailed
from oms_ops.onec import commerceml as cml
from oms_ops.onec.config import ExchangeConfig
from oms_ops.orders import cancel_orders
from oms_ops.payments import PaymentReport, record_payments
from oms_ops.quarantine import quarantine, quarantine_many
from oms_ops.state_machine import allowed
from oms_ops.stock_counts import apply_wms_snapshot

log = logging.getLogger("oms.onec")

#: the payment provider of payments 1C reports ("Заказ оплачен")
PROVIDER = "1c"
ACTOR = "1c"
#: raw.quarantine's source for documents from 1C
SOURCE = "1c"
#: serialises query / success / import: two polls of 1C at once must not interleave their batches
EXCHANGE_LOCK = 7_420_024
TYPES = ("sale", "catalog")
_FILENAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")
#: order states as 1C's "Статус заказа" shows them
STATUS_NAMES = {
    "new": "Новый",
    "on_hold": "Отложен",
    "backordered": "Ожидает поступления",
    "partially_allocated": "Частично зарезервирован",
    "allocated": "Зарезервирован",
    "picking": "Собирается",
    "packed": "Упакован",
    "partially_shipped": "Частично отгружен",
    "shipped": "Отгружен",
    "ready_for_pickup": "Готов к выдаче",
    "not_delivered": "Не доставлен",
    "delivered": "Доставлен",
    "picked_up": "Получен",
    "returned_to_sender": "Возвращен отправителю",
    "cancelled": "Отменен",
}
PAID_STATES = ("paid", "partially_refunded")
RETURN_STATES = ("received", "inspected", "closed")


# -- requests and answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One call of 1C, whatever carried it: the query parameters, the Authorization header, the cookies and
    the body (``body_too_large``: the body was longer than the upload limit and was not read)."""

    params: Mapping[str, str]
    authorization: str | None = None
    cookies: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_too_large: bool = False


@dataclass(frozen=True)
class Answer:
    text: str
    body: bytes | None = None  # the orders document of a query (XML) instead of text
    content_type: str = "text/plain; charset=utf-8"

    @property
    def content(self) -> bytes:
        return self.body if self.body is not None else self.text.encode("utf-8")


def success(message: str = "") -> Answer:
    return Answer(f"success\n{message}".rstrip("\n") + "\n")


def failure(message: str) -> Answer:
    return Answer(f"failure\n{message}\n")


def handle(conn: psycopg.Connection, config: ExchangeConfig, req: Request) -> Answer:
    """Answer one call of 1C (``type`` sale | catalog, ``mode`` checkauth | init | query | success | file |
    import | deactivate | complete). Refusals are ``failure`` answers naming the problem; nothing raises for
    bad input."""
    kind, mode = req.params.get("type", ""), req.params.get("mode", "")
    if kind not in TYPES:
        return failure(f"type: expected sale or catalog, got {kind[:40]!r}")
    if mode == "checkauth":
        if not check_basic(req.authorization, config.login, config.password):
            return failure("wrong login or password")
        token = open_session(conn, config)
        return Answer(f"success\n{config.cookie_name}\n{token}\n")
    session_id = session_of(conn, config, req.cookies.get(config.cookie_name))
    if session_id is None:
        return failure(
            f"not signed in or the session expired: call mode=checkauth and send the {config.cookie_name} cookie"
        )
    try:
        if mode == "init":
            return Answer(f"zip=no\nfile_limit={config.file_limit}\n")
        if mode == "query" and kind == "sale":
            batch_id, xml, count = export_batch(conn, config, session_id=session_id)
            log.info("1c query: batch %s with %s documents", batch_id, count)
            return Answer(f"batch {batch_id}", body=xml, content_type="application/xml; charset=utf-8")
        if mode == "success" and kind == "sale":
            confirmed = confirm_batch(conn)
            return success(f"batch {confirmed} confirmed" if confirmed else "nothing to confirm")
        if mode == "file":
            filename = _filename(req.params.get("filename"))
            if req.body_too_large:
                return failure(f"{filename}: part larger than the limit of {config.max_file_bytes} bytes")
            size = store_part(conn, config, session_id, kind, filename, req.body)
            return success(f"{filename}: {size} bytes received")
        if mode == "import":
            filename = _filename(req.params.get("filename"))
            return import_file(conn, config, session_id, kind, filename)
        if mode in ("deactivate", "complete"):
            return success("")
    except ValidationFailed as exc:
        return failure(str(exc))
    return failure(f"mode: {mode[:40]!r} is not supported for type={kind}")


def _filename(name: str | None) -> str:
    if not name or not _FILENAME.match(name) or ".." in name or name.startswith("/"):
        raise ValidationFailed(
            f"filename: {str(name)[:60]!r} is not a file name 1C sends (letters, digits, _ . - /)"
        )
    return name


# -- authentication and sessions -------------------------------------------------------------------------------


def check_basic(header: str | None, login: str, password: str) -> bool:
    """HTTP Basic credentials equal to ``login:password`` (compared in constant time)."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    user, sep, secret = given.partition(":")
    ok_user = hmac.compare_digest(user.encode(), login.encode())
    ok_secret = hmac.compare_digest(secret.encode(), password.encode())
    return bool(sep) and ok_user and ok_secret


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(conn: psycopg.Connection, config: ExchangeConfig) -> str:
    """A new session (the cookie's value; only its digest is stored); expired sessions are removed with
    their unfinished uploads."""
    token = secrets.token_urlsafe(24)
    with conn.transaction():
        conn.execute("DELETE FROM oms.onec_sessions WHERE expires_at < now()")
        conn.execute(
            """INSERT INTO oms.onec_sessions (cookie_hash, login, expires_at)
               VALUES (%s, %s, now() + make_interval(secs => %s))""",
            (_hash(token), config.login, config.session_ttl_s),
        )
    return token


def session_of(conn: psycopg.Connection, config: ExchangeConfig, token: str | None) -> int | None:
    """The live session of a cookie value (its expiry moves on with each call), else None."""
    if not token or len(token) > 200:
        return None
    row = conn.execute(
        """UPDATE oms.onec_sessions SET last_seen_at = now(),
                  expires_at = greatest(expires_at, now() + make_interval(secs => %s))
           WHERE cookie_hash = %s AND expires_at >= now() RETURNING session_id""",
        (config.session_ttl_s, _hash(token)),
    ).fetchone()
    return row[0] if row else None


# -- export: query / success -----------------------------------------------------------------------------------


def confirmed_watermark(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT coalesce(max(to_event_id), 0) FROM oms.onec_export_batches WHERE state = 'confirmed'"
    ).fetchone()[0]


def export_batch(
    conn: psycopg.Connection, config: ExchangeConfig, *, session_id: int | None
) -> tuple[int, bytes, int]:
    """Record a batch of everything changed since the confirmed watermark (and since any pending resend),
    superseding an unconfirmed one, and return ``(batch_id, document, number of documents)``."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EXCHANGE_LOCK,))
        confirmed = confirmed_watermark(conn)
        resends = conn.execute(
            "SELECT resend_id, from_event_id FROM oms.onec_resends WHERE done_at IS NULL ORDER BY resend_id"
        ).fetchall()
        start = min([confirmed, *[r[1] - 1 for r in resends]])
        upto = conn.execute(
            """SELECT coalesce(max(event_id), 0) FROM oms.order_events
               WHERE event_id > %s AND created_at <= now() - make_interval(secs => %s)""",
            (start, config.settle_s),
        ).fetchone()[0]
        # at most batch_orders orders a batch (the first export of a long history comes in several): the range
        # ends just before the first event of the order that would be one too many
        over = conn.execute(
            """SELECT first FROM (SELECT min(event_id) AS first FROM oms.order_events
                                  WHERE event_id > %s AND event_id <= %s GROUP BY order_id) AS o
               ORDER BY first OFFSET %s LIMIT 1""",
            (start, upto, config.batch_orders),
        ).fetchone()
        if over is not None:
            upto = over[0] - 1
        if not resends:
            upto = max(upto, confirmed)
        touched = conn.execute(
            """SELECT entity, array_agg(DISTINCT entity_id), array_agg(DISTINCT order_id)
               FROM oms.order_events WHERE event_id > %s AND event_id <= %s GROUP BY entity""",
            (start, upto),
        ).fetchall()
        order_ids = sorted({o for _, _, orders in touched for o in orders})
        payment_ids = sorted({i for e, ids, _ in touched if e == "payment" for i in ids})
        return_ids = sorted({i for e, ids, _ in touched if e == "return" for i in ids})
        docs = order_documents(conn, config, order_ids)
        docs += payment_documents(conn, config, payment_ids)
        docs += return_documents(conn, config, return_ids)
        xml = cml.build(
            [d for _, _, d in docs], generated_at=_local(datetime.now(UTC), config), version=config.version
        )
        conn.execute("UPDATE oms.onec_export_batches SET state = 'superseded' WHERE state = 'sent'")
        batch_id = conn.execute(
            """INSERT INTO oms.onec_export_batches (session_id, from_event_id, to_event_id, resend_ids, documents,
                                                    bytes, sha256)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING batch_id""",
            (
                session_id,
                start,
                upto,
                [r[0] for r in resends],
                len(docs),
                len(xml),
                hashlib.sha256(xml).hexdigest(),
            ),
        ).fetchone()[0]
        if docs:
            with conn.cursor().copy(
                "COPY oms.onec_export_documents (batch_id, kind, entity_id, document_id, amount) FROM STDIN"
            ) as cp:
                for kind, entity_id, d in docs:
                    cp.write_row((batch_id, kind, entity_id, d.id, cml.money(d.amount)))
    return batch_id, xml, len(docs)


def confirm_batch(conn: psycopg.Connection) -> int | None:
    """1C loaded the last query: its batch is confirmed (the watermark moves) and the resends it carried are
    done. None when no batch waits."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EXCHANGE_LOCK,))
        before = confirmed_watermark(conn)
        row = conn.execute(
            """UPDATE oms.onec_export_batches SET state = 'confirmed', confirmed_at = now()
               WHERE batch_id = (SELECT max(batch_id) FROM oms.onec_export_batches WHERE state = 'sent')
               RETURNING batch_id, resend_ids, to_event_id"""
        ).fetchone()
        if row is None:
            return None
        batch_id, resend_ids, to_event_id = row
        if to_event_id >= before:  # the resends' whole range has gone to 1C
            conn.execute(
                "UPDATE oms.onec_resends SET done_at = now() WHERE resend_id = ANY(%s)", (resend_ids,)
            )
        else:  # a capped batch: the resends go on from where it ended
            conn.execute(
                "UPDATE oms.onec_resends SET from_event_id = %s WHERE resend_id = ANY(%s)",
                (to_event_id + 1, resend_ids),
            )
        return batch_id


def _local(at: datetime, config: ExchangeConfig) -> datetime:
    """1C works in the seller's local time (naive)."""
    return at.astimezone(ZoneInfo(config.timezone)).replace(tzinfo=None)


def _buyer(row: Mapping[str, Any]) -> cml.Party:
    """The buyer as 1C needs them: a name and a stable id that is not their phone or e-mail."""
    contact = row.get("customer_phone") or row.get("customer_email")
    key = f"{row['channel_code']}|{contact}" if contact else row["order_number"]
    return cml.Party(
        id="buyer-" + hashlib.sha256(key.encode()).hexdigest()[:20],
        name=(row.get("customer_name") or "Розничный покупатель")[:200],
    )


def _line_item(sku: str, name: str, price: Decimal, qty: int) -> cml.Item:
    price = cml.money(price)
    return cml.Item(
        id=sku, article=sku, name=name, unit_price=price, qty=Decimal(qty), amount=cml.money(price * qty)
    )


def order_documents(
    conn: psycopg.Connection, config: ExchangeConfig, order_ids: Sequence[int]
) -> list[tuple[str, int, cml.Document]]:
    """An «Заказ товара» document per order, as the order is now. A cancelled order keeps its lines (1C sees
    what was cancelled); otherwise cancelled quantities are left out."""
    if not order_ids:
        return []
    cur = conn.cursor(row_factory=dict_row)
    orders = cur.execute(
        """SELECT o.order_id, o.order_number, o.channel_code, o.external_id, o.state, o.placed_at, o.customer_name,
                  o.customer_phone, o.customer_email, o.payment_method, o.payment_status, o.currency,
                  o.shipping_amount,
                  (SELECT max(p.paid_at) FROM oms.payments p
                    WHERE p.order_id = o.order_id AND p.paid_at IS NOT NULL) AS paid_at,
                  (SELECT string_agg(DISTINCT s.tracking_number, ', ') FROM oms.shipments s
                    WHERE s.order_id = o.order_id AND s.tracking_number IS NOT NULL) AS tracking
           FROM oms.orders o WHERE o.order_id = ANY(%s) ORDER BY o.order_id""",
        (list(order_ids),),
    ).fetchall()
    lines: dict[int, list[dict]] = {}
    for line in cur.execute(
        """SELECT l.order_id, l.sku, coalesce(l.name, p.name, l.sku) AS name, l.qty, l.qty_cancelled, l.unit_price
           FROM oms.order_lines l LEFT JOIN oms.products p ON p.sku = l.sku
           WHERE l.order_id = ANY(%s) ORDER BY l.order_id, l.line_no""",
        (list(order_ids),),
    ):
        lines.setdefault(line["order_id"], []).append(line)
    out = []
    for o in orders:
        cancelled = o["state"] == "cancelled"
        items = [
            _line_item(
                ln["sku"],
                ln["name"],
                ln["unit_price"],
                ln["qty"] if cancelled else ln["qty"] - ln["qty_cancelled"],
            )
            for ln in lines.get(o["order_id"], [])
            if cancelled or ln["qty"] > ln["qty_cancelled"]
        ]
        if o["shipping_amount"] and o["shipping_amount"] > 0:
            items.append(
                cml.Item(
                    id="delivery",
                    article="DELIVERY",
                    name="Доставка",
                    unit_price=cml.money(o["shipping_amount"]),
                    qty=Decimal(1),
                    amount=cml.money(o["shipping_amount"]),
                    kind="Услуга",
                )
            )
        paid = o["payment_status"] in PAID_STATES
        props = {
            cml.STATUS: STATUS_NAMES.get(o["state"], o["state"]),
            cml.PAY_METHOD: "Наложенный платеж" if o["payment_method"] == "cod" else "Предоплата",
            cml.PAID: "true" if paid else "false",
            cml.PAID_AT: _local(o["paid_at"], config).isoformat() if paid and o["paid_at"] else "",
            cml.CANCELLED: "true" if cancelled else "false",
            cml.TRACKING: o["tracking"] or "",
            "Канал продаж": o["channel_code"],
            "Номер заказа в канале": o["external_id"],
        }
        doc = cml.Document(
            id=o["order_number"],
            number=o["order_number"],
            at=_local(o["placed_at"], config),
            operation=cml.ORDER,
            amount=sum((i.amount for i in items), Decimal(0)),
            items=tuple(items),
            parties=(_buyer(o),),
            requisites=props,
            currency=o["currency"],
        )
        out.append(("order", o["order_id"], doc))
    return out


def payment_documents(
    conn: psycopg.Connection, config: ExchangeConfig, payment_ids: Sequence[int]
) -> list[tuple[str, int, cml.Document]]:
    """A «Выплата безналичных денег» per received payment (not those 1C itself reported)."""
    if not payment_ids:
        return []
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            """SELECT p.payment_id, p.provider, p.provider_payment_id, p.method, p.amount, p.currency, p.state,
                      coalesce(p.paid_at, p.reported_at, p.created_at) AS paid_at, o.order_number, o.channel_code,
                      o.customer_name, o.customer_phone, o.customer_email
               FROM oms.payments p JOIN oms.orders o USING (order_id)
               WHERE p.payment_id = ANY(%s) AND p.state IN ('paid', 'partially_refunded', 'refunded')
                 AND p.provider <> %s
               ORDER BY p.payment_id""",
            (list(payment_ids), PROVIDER),
        )
        .fetchall()
    )
    return [
        (
            "payment",
            r["payment_id"],
            cml.Document(
                id=f"PAY-{r['payment_id']}",
                number=f"PAY-{r['payment_id']}",
                at=_local(r["paid_at"], config),
                operation=cml.PAYMENT,
                amount=cml.money(r["amount"]),
                parties=(_buyer(r),),
                currency=r["currency"],
                requisites={
                    "Номер заказа": r["order_number"],
                    cml.PAY_METHOD: r["method"] or r["provider"],
                    "Платежная система": r["provider"],
                    "Идентификатор платежа": r["provider_payment_id"],
                },
            ),
        )
        for r in rows
    ]


def return_documents(
    conn: psycopg.Connection, config: ExchangeConfig, return_ids: Sequence[int]
) -> list[tuple[str, int, cml.Document]]:
    """A «Возврат товара» per return whose goods arrived: the received quantities at the order's prices."""
    if not return_ids:
        return []
    cur = conn.cursor(row_factory=dict_row)
    rets = cur.execute(
        """SELECT r.return_id, r.rma_number, r.state, coalesce(r.received_at, r.updated_at) AS at, o.order_number,
                  o.channel_code, o.currency, o.customer_name, o.customer_phone, o.customer_email
           FROM oms.returns r JOIN oms.orders o USING (order_id)
           WHERE r.return_id = ANY(%s) AND r.state = ANY(%s) ORDER BY r.return_id""",
        (list(return_ids), list(RETURN_STATES)),
    ).fetchall()
    lines: dict[int, list[dict]] = {}
    for ln in cur.execute(
        """SELECT rl.return_id, rl.sku, coalesce(l.name, p.name, rl.sku) AS name, l.unit_price, rl.qty_received
           FROM oms.return_lines rl JOIN oms.order_lines l USING (line_id) LEFT JOIN oms.products p ON p.sku = rl.sku
           WHERE rl.return_id = ANY(%s) AND rl.qty_received > 0 ORDER BY rl.return_line_id""",
        ([r["return_id"] for r in rets],),
    ):
        lines.setdefault(ln["return_id"], []).append(ln)
    out = []
    for r in rets:
        items = [
            _line_item(ln["sku"], ln["name"], ln["unit_price"], ln["qty_received"])
            for ln in lines.get(r["return_id"], [])
        ]
        if not items:
            continue
        out.append(
            (
                "return",
                r["return_id"],
                cml.Document(
                    id=r["rma_number"],
                    number=r["rma_number"],
                    at=_local(r["at"], config),
                    operation=cml.RETURN,
                    amount=sum((i.amount for i in items), Decimal(0)),
                    items=tuple(items),
                    parties=(_buyer(r),),
                    currency=r["currency"],
                    requisites={"Номер заказа": r["order_number"], "Статус возврата": r["state"]},
                ),
            )
        )
    return out


# -- uploads and imports ---------------------------------------------------------------------------------------


def store_part(
    conn: psycopg.Connection, config: ExchangeConfig, session_id: int, kind: str, filename: str, body: bytes
) -> int:
    """Append one part of an uploaded file; the file's size so far. A file larger than ``max_file_bytes``
    is refused (and dropped), so an upload can never fill the database."""
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO oms.onec_uploads AS u (session_id, exchange_type, filename, content, parts)
               VALUES (%s, %s, %s, %s, 1)
               ON CONFLICT (session_id, exchange_type, filename)
               DO UPDATE SET content = u.content || excluded.content, parts = u.parts + 1, updated_at = now()
               RETURNING upload_id, octet_length(content)""",
            (session_id, kind, filename, body),
        ).fetchone()
        if row[1] > config.max_file_bytes:
            conn.execute("DELETE FROM oms.onec_uploads WHERE upload_id = %s", (row[0],))
    if row[1] > config.max_file_bytes:  # raised after the commit, so the upload is really dropped
        raise ValidationFailed(f"{filename}: larger than the limit of {config.max_file_bytes} bytes; dropped")
    return row[1]


@dataclass
class ImportResult:
    """Per document of an import: applied, unchanged (nothing to do), refused (quarantined, with why) and
    noted (differences 1C reported that the OMS does not apply by itself)."""

    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    noted: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "unchanged": self.unchanged,
            "refused": self.refused,
            "noted": self.noted,
            "quarantined": self.quarantined,
        }

    def summary(self) -> str:
        return (
            f"{len(self.applied)} applied, {len(self.unchanged)} unchanged, {len(self.refused)} refused, "
            f"{len(self.noted)} noted"
        )


def _record_import(conn, session_id, kind, filename, content, state, message, result) -> int:
    return conn.execute(
        """INSERT INTO oms.onec_imports (session_id, exchange_type, filename, sha256, bytes, state, message, result)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING import_id""",
        (
            session_id,
            kind,
            filename,
            hashlib.sha256(content).hexdigest(),
            len(content),
            state,
            message[:2000],
            Jsonb(result),
        ),
    ).fetchone()[0]


def import_file(
    conn: psycopg.Connection, config: ExchangeConfig, session_id: int, kind: str, filename: str
) -> Answer:
    """Import an uploaded file (all its parts): ``failure`` naming the problem when it cannot be read (nothing
    applied, the attempt recorded), else ``success`` with the per-document counts."""
    row = conn.execute(
        "SELECT upload_id, content FROM oms.onec_uploads WHERE session_id = %s AND exchange_type = %s AND filename = %s",
        (session_id, kind, filename),
    ).fetchone()
    if row is None:
        return failure(f"{filename}: no such file uploaded in this session (send it with mode=file first)")
    upload_id, content = row[0], bytes(row[1])
    digest = hashlib.sha256(content).hexdigest()
    if not filename.lower().endswith(".xml"):
        with conn.transaction():
            conn.execute("DELETE FROM oms.onec_uploads WHERE upload_id = %s", (upload_id,))
        return success(f"{filename}: not an exchange document, ignored")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EXCHANGE_LOCK,))
        done = conn.execute(
            """SELECT import_id FROM oms.onec_imports
               WHERE exchange_type = %s AND filename = %s AND sha256 = %s AND state = 'applied'""",
            (kind, filename, digest),
        ).fetchone()
        if done is not None:
            conn.execute("DELETE FROM oms.onec_uploads WHERE upload_id = %s", (upload_id,))
            return success(f"{filename}: already imported (import {done[0]}), nothing changed")
        try:
            root = cml.parse(content, name=filename, max_bytes=config.max_file_bytes)
        except ValidationFailed as exc:
            conn.execute("DELETE FROM oms.onec_uploads WHERE upload_id = %s", (upload_id,))
            _record_import(conn, session_id, kind, filename, content, "failed", str(exc), {})
            log.warning("1c import refused: %s", exc)
            return failure(str(exc))
        if kind == "sale":
            res = import_orders(conn, config, root, filename)
        else:
            res = import_catalog(conn, config, root, filename, digest)
        conn.execute("DELETE FROM oms.onec_uploads WHERE upload_id = %s", (upload_id,))
        import_id = _record_import(
            conn, session_id, kind, filename, content, "applied", res.summary(), res.as_dict()
        )
    return success(f"{filename}: import {import_id}: {res.summary()}")


def _refuse(conn, res: ImportResult, doc_id: str | None, payload: Any, reason: str) -> None:
    res.quarantined.append(quarantine(conn, SOURCE, doc_id, payload, reason))
    res.refused.append({"document": doc_id, "reason": reason})


def import_orders(conn: psycopg.Connection, config: ExchangeConfig, root, filename: str) -> ImportResult:
    """1C's changed orders («Заказ товара» documents, by Номер = our order number), each on its own."""
    res = ImportResult()
    for rd in cml.read_documents(root, name=filename):
        where = f"{filename} Документ[{rd.position}]" + (f" {rd.id}" if rd.id else "")
        if rd.document is None:
            _refuse(conn, res, rd.id, rd.raw, f"{where}: " + "; ".join(rd.problems))
            continue
        doc = rd.document
        if doc.operation != cml.ORDER:
            res.unchanged.append(doc.id)
            continue
        try:
            with conn.transaction():
                outcome = _apply_order(conn, config, doc)
        except OmsError as exc:
            _refuse(conn, res, doc.id, rd.raw, f"{where}: {exc}")
            continue
        kind, detail = outcome
        if kind == "applied":
            res.applied.append(doc.id)
        elif kind == "unchanged":
            res.unchanged.append(doc.id)
        if detail:
            res.noted.append({"document": doc.id, **detail})
    return res


def _apply_order(conn: psycopg.Connection, config: ExchangeConfig, doc: cml.Document) -> tuple[str, dict]:
    """Apply one order document of 1C (inside a savepoint); raises OmsError to refuse it."""
    row = conn.execute(
        """SELECT order_id, order_number, state, payment_status, total_amount,
                  (SELECT coalesce(sum(qty_shipped), 0) FROM oms.order_lines l WHERE l.order_id = o.order_id)
           FROM oms.orders o WHERE order_number = %s OR order_number = %s FOR UPDATE""",
        (doc.number, doc.id),
    ).fetchone()
    if row is None:
        raise ValidationFailed(f"no order {doc.number!r} in the OMS")
    order_id, number, state, payment_status, total, shipped = row
    props = doc.requisites
    applied = False
    if cml.truthy(props.get(cml.PAID)) and payment_status in ("pending", "failed"):
        paid_at = cml.parse_datetime(props.get(cml.PAID_AT), None)
        occurred = paid_at.replace(tzinfo=ZoneInfo(config.timezone)) if paid_at else None
        amount = doc.amount if doc.amount and doc.amount > 0 else total
        result = record_payments(
            conn,
            [
                PaymentReport(
                    provider=PROVIDER,
                    provider_payment_id=number,  # one payment per order from 1C: a re-sent file records it once
                    status="paid",
                    amount=cml.money(amount),
                    order_id=order_id,
                    method=(props.get(cml.PAY_METHOD) or "1c")[:60],
                    occurred_at=occurred,
                )
            ],
            actor=ACTOR,
        )
        if result.quarantined or result.ignored:
            raise ValidationFailed(f"the payment was not recorded: {result.ignored or 'quarantined'}")
        applied = bool(result.created or result.updated)
    if cml.truthy(props.get(cml.CANCELLED)) and state != "cancelled":
        if shipped > 0 or not allowed("order", state, "cancelled"):
            raise ValidationFailed(
                f"order {number} cannot be cancelled from 1C: it is {state}"
                + (f" and {shipped} unit(s) have shipped" if shipped else "")
                + "; ops must settle it (return or correct 1C)"
            )
        cancel_orders(conn, [order_id], reason="cancelled in 1C", actor=ACTOR)
        applied = True
    noted = {}
    theirs = props.get(cml.STATUS)
    if (
        theirs
        and theirs not in (STATUS_NAMES.get(state, state), state)
        and not cml.truthy(props.get(cml.CANCELLED))
    ):
        noted["Статус заказа"] = {"ours": STATUS_NAMES.get(state, state), "theirs": theirs}
    return ("applied" if applied else "unchanged"), noted


def import_catalog(
    conn: psycopg.Connection, config: ExchangeConfig, root, filename: str, digest: str
) -> ImportResult:
    """import.xml (Каталог/Товары: names and articles → products) and offers.xml (ПакетПредложений: prices;
    stock only when 1C is the stock master). Each item on its own; bad ones quarantined."""
    res = ImportResult()
    catalog = cml.child(root, "Каталог")
    if catalog is not None:
        _import_products(conn, res, catalog, filename)
    offers = cml.child(root, "ПакетПредложений")
    if offers is not None:
        _import_offers(conn, config, res, offers, filename, digest)
    if catalog is None and offers is None:
        raise ValidationFailed(f"{filename}: neither Каталог nor ПакетПредложений: not a catalogue file")
    return res


def _import_products(conn, res: ImportResult, catalog, filename: str) -> None:
    for n, g in enumerate(cml.children(cml.child(catalog, "Товары"), "Товар"), start=1):
        onec_id, article, name = cml.text(g, "Ид"), cml.text(g, "Артикул"), cml.text(g, "Наименование")
        sku = article or onec_id
        payload = {"file": filename, "position": n, "Ид": onec_id, "Артикул": article, "Наименование": name}
        problems = [p for p, bad in (("no Артикул or Ид", not sku), ("no Наименование", not name)) if bad]
        if sku and len(sku) > 64:
            problems.append("Артикул longer than 64 characters")
        if problems:
            _refuse(conn, res, sku, payload, f"{filename} Товар[{n}]: " + "; ".join(problems))
            continue
        changed = conn.execute(
            """INSERT INTO oms.products AS p (sku, name, weight_g, price) VALUES (%s, %s, 0, 0)
               ON CONFLICT (sku) DO UPDATE SET name = excluded.name, updated_at = now()
               WHERE p.name IS DISTINCT FROM excluded.name
               RETURNING sku""",
            (sku, name[:500]),
        ).fetchone()
        if onec_id:
            conn.execute(
                """INSERT INTO oms.onec_products (onec_id, sku) VALUES (%s, %s)
                   ON CONFLICT (onec_id) DO UPDATE SET sku = excluded.sku, updated_at = now()""",
                (onec_id[:200], sku),
            )
        (res.applied if changed else res.unchanged).append(sku)


def _import_offers(
    conn, config: ExchangeConfig, res: ImportResult, offers, filename: str, digest: str
) -> None:
    counts: dict[str, list[tuple[str, int]]] = {}
    stock_seen = False
    for n, offer in enumerate(cml.children(cml.child(offers, "Предложения"), "Предложение"), start=1):
        onec_id = (cml.text(offer, "Ид") or "").split("#", 1)[0]
        article = cml.text(offer, "Артикул")
        payload = {"file": filename, "position": n, "Ид": onec_id, "Артикул": article}
        row = conn.execute(
            """SELECT sku FROM oms.products WHERE sku = %s
               UNION ALL SELECT sku FROM oms.onec_products WHERE onec_id = %s LIMIT 1""",
            (article or "", onec_id),
        ).fetchone()
        if row is None:
            _refuse(
                conn,
                res,
                article or onec_id,
                payload,
                f"{filename} Предложение[{n}]: unknown product {article or onec_id!r} (send import.xml first)",
            )
            continue
        sku = row[0]
        price_el = cml.child(cml.child(offer, "Цены"), "Цена")
        price_text = cml.text(price_el, "ЦенаЗаЕдиницу") if price_el is not None else None
        if price_text is not None:
            problems: list[str] = []
            price = cml._decimal(price_text, "ЦенаЗаЕдиницу", problems)
            if problems or price is None or price < 0:
                _refuse(
                    conn,
                    res,
                    sku,
                    payload,
                    f"{filename} Предложение[{n}]: " + ("; ".join(problems) or "negative price"),
                )
                continue
            changed = conn.execute(
                "UPDATE oms.products SET price = %s, updated_at = now() WHERE sku = %s AND price <> %s RETURNING sku",
                (cml.money(price), sku, cml.money(price)),
            ).fetchone()
            (res.applied if changed else res.unchanged).append(sku)
        for store in cml.children(offer, "Склад"):
            stock_seen = True
            loc, qty = store.get("ИдСклада"), store.get("КоличествоНаСкладе")
            if loc and qty is not None and qty.strip().lstrip("-").isdigit():
                counts.setdefault(loc, []).append((sku, int(qty)))
            else:
                _refuse(
                    conn,
                    res,
                    sku,
                    payload,
                    f"{filename} Предложение[{n}]: Склад needs ИдСклада and a whole КоличествоНаСкладе",
                )
        if cml.child(offer, "Количество") is not None:
            stock_seen = True
    if stock_seen and not config.stock_master:
        res.noted.append({"stock": "ignored: the WMS is the stock master (OMS_ONEC_STOCK_MASTER is off)"})
        return
    for loc, rows in sorted(counts.items()):
        known = conn.execute("SELECT 1 FROM oms.locations WHERE location_code = %s", (loc,)).fetchone()
        if known is None:
            res.quarantined += quarantine_many(
                conn,
                [(SOURCE, loc, {"file": filename, "ИдСклада": loc}, f"{filename}: unknown location {loc!r}")],
            )
            res.refused.append({"document": loc, "reason": f"unknown location {loc!r}"})
            continue
        snap = apply_wms_snapshot(conn, loc, rows, snapshot_id=f"1c:{digest[:16]}:{loc}", actor=ACTOR)
        res.applied.append(f"stock:{loc}")
        res.noted.append({"stock": loc, "result": str(snap)[:500]})


# -- operations ------------------------------------------------------------------------------------------------


def status(conn: psycopg.Connection, *, limit: int = 10) -> dict[str, Any]:
    """What `oms onec status` shows: the confirmed watermark, the batch waiting for 1C's confirmation, the
    last batches and imports, and resends not yet delivered."""
    cur = conn.cursor(row_factory=dict_row)
    batches = cur.execute(
        """SELECT batch_id, state, from_event_id, to_event_id, documents, bytes, created_at, confirmed_at
           FROM oms.onec_export_batches ORDER BY batch_id DESC LIMIT %s""",
        (limit,),
    ).fetchall()
    imports = cur.execute(
        """SELECT import_id, exchange_type, filename, state, message, created_at
           FROM oms.onec_imports ORDER BY import_id DESC LIMIT %s""",
        (limit,),
    ).fetchall()
    pending = next((b for b in batches if b["state"] == "sent"), None)
    resends = cur.execute(
        "SELECT resend_id, since, from_event_id, requested_by, requested_at FROM oms.onec_resends WHERE done_at IS NULL"
    ).fetchall()
    waiting = conn.execute(
        "SELECT count(*) FROM oms.order_events WHERE event_id > %s", (confirmed_watermark(conn),)
    ).fetchone()[0]
    return {
        "confirmed_event_id": confirmed_watermark(conn),
        "events_not_yet_confirmed": waiting,
        "pending_batch": pending,
        "batches": batches,
        "imports": imports,
        "resends": resends,
    }


def request_resend(conn: psycopg.Connection, since: datetime, *, actor: str) -> int:
    """Export again, at 1C's next query, every document changed since ``since`` (kept until a batch carrying
    it is confirmed). ValidationFailed when nothing changed since then."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with conn.transaction():
        first = conn.execute(
            "SELECT min(event_id) FROM oms.order_events WHERE created_at >= %s", (since,)
        ).fetchone()[0]
        if first is None:
            raise ValidationFailed(f"since: nothing changed since {since.isoformat()}")
        return conn.execute(
            "INSERT INTO oms.onec_resends (since, from_event_id, requested_by) VALUES (%s, %s, %s) RETURNING resend_id",
            (since, first, actor),
        ).fetchone()[0]


def expire_sessions(conn: psycopg.Connection, *, older_than: timedelta = timedelta(0)) -> int:
    """Remove expired sessions and their unfinished uploads."""
    return conn.execute("DELETE FROM oms.onec_sessions WHERE expires_at < now() - %s", (older_than,)).rowcount

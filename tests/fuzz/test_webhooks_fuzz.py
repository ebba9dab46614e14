"""Fuzz: the web store's webhook receiver under hostile deliveries.

Properties, per example (a body — a hostile order payload, or bytes that are no JSON at all, or JSON nested
thousands deep — signed with the shop's secret or not):

* the answer is never a 5xx;
* an unsigned or badly signed delivery is answered 401 and writes nothing (no receipt, no raw row, no
  quarantine row): it is only counted;
* a signed one is answered 200 and is either stored raw or quarantined with a non-empty reason — exactly
  one of the two — with its receipt;
* normalising what was stored raises nothing, and ``check_invariants`` finds nothing.

Plus the probe's findings as fixed examples, and the body limit enforced while reading: a body over the limit
is refused with 413 without being read to its end.
"""

from __future__ import annotations

import itertools
import json
import socket
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms_ops.channels import registry
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.webhooks import WebhookServer
from oms_ops.invariants import check_invariants
from oms_ops.wire.shopify import shopify_hmac
from tests.fuzz.conftest import FUZZ
from tests.fuzz.strategies import mutated, shop_order

SECRET = "fuzz-webhook-secret"
SMALL = 64 * 1024


@pytest.fixture(scope="module")
def receiver(fuzz_url):
    with WebhookServer(fuzz_url, SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def small_receiver(fuzz_url):
    with WebhookServer(fuzz_url, SECRET, max_body=SMALL) as server:
        yield server


_ids = itertools.count(1)


def _counts(conn) -> tuple[int, int, int]:
    return conn.execute(
        """SELECT (SELECT count(*) FROM connectors.webhook_receipts), (SELECT count(*) FROM raw.channel_orders),
                  (SELECT count(*) FROM raw.quarantine)"""
    ).fetchone()


def post(
    url: str, body: bytes, *, signed: bool, webhook_id: str | None = None, client: httpx.Client | None = None
) -> httpx.Response:
    headers = {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": webhook_id or f"fz-{next(_ids)}",
        "X-Shopify-Shop-Domain": "fuzz.myshopify.com",
        "Content-Type": "application/json",
    }
    if signed:
        headers["X-Shopify-Hmac-SHA256"] = shopify_hmac(body, SECRET)
    elif next(_ids) % 2:
        headers["X-Shopify-Hmac-SHA256"] = shopify_hmac(body, "not-the-secret")
    return (client or httpx).post(url, content=body, headers=headers, timeout=30)


def deliver_and_check(conn, receiver, body: bytes, signed: bool) -> str:
    before = _counts(conn)
    rejected = receiver.rejections.total
    r = post(receiver.url, body, signed=signed)
    assert r.status_code < 500, (r.status_code, r.text)
    after = _counts(conn)
    if not signed:
        assert r.status_code == 401
        assert after == before, "an unsigned delivery wrote to the database"
        assert receiver.rejections.total == rejected + 1
        return "rejected (unsigned)"
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    receipts, raw, quarantine = (a - b for a, b in zip(after, before, strict=True))
    assert receipts == 1
    if result == "stored":
        assert (raw, quarantine) in ((1, 0), (0, 0)), (
            raw,
            quarantine,
        )  # (0, 0): the same payload came before
    else:
        assert result == "quarantined" and (raw, quarantine) == (0, 1), (result, raw, quarantine)
        reason = conn.execute(
            "SELECT reason FROM raw.quarantine ORDER BY quarantine_id DESC LIMIT 1"
        ).fetchone()[0]
        assert reason.strip()
    normalize_pending(conn, registry.channel("webstore"))
    assert conn.execute("SELECT count(*) FROM raw.pending_orders").fetchone()[0] == 0
    return result


def _deep_dumps(value) -> str:
    """JSON text of ``value`` without recursion (for the deeply nested values the mutations make)."""
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) and v.startswith("\0tok:"):
            out.append(v[5:])
        elif isinstance(v, dict):
            items = list(v.items())
            stack.append("\0tok:}")
            for i, (k, x) in enumerate(reversed(items)):
                stack.append(x)
                stack.append("\0tok:" + json.dumps(str(k)) + ":")
                if i < len(items) - 1:
                    stack.append("\0tok:,")
            stack.append("\0tok:{")
        elif isinstance(v, list):
            stack.append("\0tok:]")
            for i, x in enumerate(reversed(v)):
                stack.append(x)
                if i < len(v) - 1:
                    stack.append("\0tok:,")
            stack.append("\0tok:[")
        else:
            out.append(json.dumps(v))
    return "".join(out)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["payload", "payload", "payload", "bytes", "deep", "json"]))
    if kind == "payload":
        p = draw(mutated(shop_order(next(_ids))))
        ensure_ascii = draw(st.booleans())
        try:
            text = json.dumps(p, ensure_ascii=ensure_ascii)
        except RecursionError:  # a value nested deeper than json can write: sent as the raw text instead
            text = _deep_dumps(p)
        return text.encode("utf-8", "surrogatepass")  # a lone surrogate sent raw is invalid UTF-8
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 900, 5000, 100_000]))
        return b'{"id": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    return draw(
        st.sampled_from(
            [
                b'{"id": "1\\u0000"}',
                b'{"id": "\\ud800"}',
                b'{"id": 1, "total_price": NaN}',
                b'{"id": 1e400}',
                b'{"id": []}',
                b'{"id": {"\\u0000": 1}}',
                b'"just a string"',
                b"[]",
                b"null",
                b'{"id": 5, "line_items": [{"quantity": 4294967299, "sku": "A", "price": "1.00"}]}',
            ]
        )
    )


def test_hostile_deliveries(fuzz_conn, receiver, tally):
    @FUZZ
    @given(body=bodies(), signed=st.integers(0, 4).map(bool))
    def run(body, signed):
        tally.add("webhook", deliver_and_check(fuzz_conn, receiver, body, signed))
        tally.add("webhook", "examples")

    run()
    assert check_invariants(fuzz_conn) == []


PROBE = {
    "NUL in id": b'{"id": "12\\u00003", "line_items": []}',
    "NUL in a name": json.dumps({**shop_order(90_001), "customer": {"first_name": "И\x00ван"}}).encode(),
    "lone surrogate": json.dumps({**shop_order(90_002), "note": "\ud800"}).encode(),
    "raw invalid UTF-8": b'{"id": 90003, "note": "\xed\xa0\x80"}',
    "deep nesting": b'{"id": 90004, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "not JSON": b"\x00\x01\x02 not json",
    "NaN": b'{"id": 90005, "total_price": NaN}',
    "quantity 2^32 + 3": json.dumps(
        {**shop_order(90_006), "line_items": [{"sku": "A", "quantity": 2**32 + 3, "price": "1.00"}]}
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(PROBE))
def test_the_probes_webhook_findings(fuzz_conn, receiver, tally, name):
    outcome = deliver_and_check(fuzz_conn, receiver, PROBE[name], signed=True)
    tally.add("webhook (probe findings)", outcome)
    if name in ("NUL in id", "deep nesting", "not JSON"):
        assert outcome == "quarantined"
    if name == "quantity 2^32 + 3":
        assert outcome == "stored"
        ext = str(shop_order(90_006)["id"])  # stored raw, refused at normalisation: never accepted as 3
        reason = fuzz_conn.execute(
            "SELECT reason FROM raw.quarantine WHERE source = 'webstore' AND external_id = %s", (ext,)
        ).fetchone()[0]
        assert "qty" in reason and "2147483647" in reason, reason
        assert not fuzz_conn.execute("SELECT 1 FROM oms.orders WHERE external_id = %s", (ext,)).fetchone()


def test_unsigned_floods_write_nothing(fuzz_conn, receiver):
    before, rejected = _counts(fuzz_conn), receiver.rejections.total
    with httpx.Client() as client:
        for i in range(50):
            r = post(receiver.url, b'{"id": %d}' % i, signed=False, client=client)
            assert r.status_code == 401
    assert _counts(fuzz_conn) == before
    assert receiver.rejections.total == rejected + 50


def _raw_request(port: int, head: bytes, chunks, *, read_timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``head`` then ``chunks`` (stopping quietly when the server closes), and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(head)
        t0 = time.monotonic()
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:
            pass  # the server refused and closed: what it answered is still readable
        s.settimeout(read_timeout)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except OSError:
            pass
        return data, time.monotonic() - t0


def test_an_oversized_declared_body_is_refused_before_it_is_read(small_receiver):
    """``Content-Length`` of 300 MiB, only a few bytes sent: the 413 comes at once — nothing waits for (or
    holds) the rest."""
    head = (
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (300 * 1024 * 1024)
    )
    data, took = _raw_request(small_receiver.port, head, [b'{"id": 1'])
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert took < 5


def test_a_streamed_body_is_cut_at_the_limit(small_receiver):
    """A chunked body (no length given) is read only up to the limit: the 413 arrives while the sender still
    has most of it to send, and the receiver never holds more than the limit."""

    def chunks():
        piece = b"x" * 16384
        for _ in range(10_000):  # 160 MiB if it were all read
            yield b"%x\r\n%s\r\n" % (len(piece), piece)

    head = (
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    data, took = _raw_request(small_receiver.port, head, chunks())
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert took < 20

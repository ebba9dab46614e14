"""Small pure pieces: the simulated clock, fault rules, webhook signing, the PDF writer, call-centre orders."""

import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime

import pytest

from simulators import FaultRule, SimClock, generate_callcentre_orders, shopify_hmac, verify_shopify_hmac
from simulators.faults import FaultInjector, FaultSet
from simulators.pdf import PdfPage, build_pdf
from tests.simulators.pdfcheck import assert_valid_pdf


def test_manual_clock_moves_only_when_advanced():
    clock = SimClock(datetime(2025, 1, 1, tzinfo=UTC), manual=True)
    assert clock.now() == clock.now() == datetime(2025, 1, 1, tzinfo=UTC)
    assert clock.advance(90) == datetime(2025, 1, 1, 0, 1, 30, tzinfo=UTC)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_live_clock_scales_real_time():
    wall = [100.0]
    clock = SimClock(datetime(2025, 1, 1, tzinfo=UTC), speed=60, wall=lambda: wall[0])
    wall[0] += 2  # two real seconds → two simulated minutes
    assert clock.now() == datetime(2025, 1, 1, 0, 2, tzinfo=UTC)
    clock.set_speed(1)
    wall[0] += 10
    assert clock.now() == datetime(2025, 1, 1, 0, 2, 10, tzinfo=UTC)


def test_fault_rule_validation():
    with pytest.raises(ValueError):
        FaultRule(kind="explode", count=1)
    with pytest.raises(ValueError):
        FaultRule(kind="rate_limit")  # neither count nor probability
    with pytest.raises(ValueError):
        FaultRule.from_dict({"kind": "rate_limit", "count": 1, "colour": "red"})


def test_fault_counts_and_paths():
    inj = FaultInjector(1, "t", [{"kind": "server_error", "count": 2, "path": "/a"}])
    fired = [inj.draw("GET", p).kinds for p in ("/b", "/a", "/a/x", "/a")]
    assert fired == [[], ["server_error"], ["server_error"], []]
    assert inj.snapshot()[0]["remaining"] == 0


def test_fault_probability_is_deterministic():
    def run() -> list[bool]:
        inj = FaultInjector(9, "t", [{"kind": "rate_limit", "probability": 0.3}])
        return [bool(inj.draw("GET", "/x")) for _ in range(200)]

    first = run()
    assert first == run()
    assert 30 < sum(first) < 90


def test_data_faults_leave_the_originals_alone():
    records = [{"id": i, "q": 1} for i in range(10)]
    rules = [FaultRule("duplicate", count=1, share=0.2), FaultRule("malformed", count=1, share=0.1)]
    out = FaultSet(rules, random.Random(1)).apply_records(records, lambda r, rng: r.update(q="x"))
    assert len(out) == 12 and records == [{"id": i, "q": 1} for i in range(10)]
    assert sum(1 for r in out if r["q"] == "x") >= 1


def test_shopify_hmac_verifies_and_rejects_tampering():
    body, secret = b'{"id":1,"total_price":"10.00"}', "s3cret"
    header = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert shopify_hmac(body, secret) == header
    assert verify_shopify_hmac(body, header, secret)
    assert not verify_shopify_hmac(body.replace(b"10.00", b"1.00"), header, secret)
    assert not verify_shopify_hmac(body, header, "other")
    assert not verify_shopify_hmac(body, None, secret)


def test_pdf_writer_produces_a_valid_file():
    pdf = build_pdf([PdfPage("WAYBILL", ["Order (IM): ORD-1", "Получатель: Иванов"], "1100000017")] * 2)
    assert_valid_pdf(pdf, pages=2)
    assert b"ORD-1" in pdf and b"Ivanov" in pdf


def test_callcentre_orders_shape_and_reproducibility():
    orders = generate_callcentre_orders(3, 40, messy_share=0.5)
    assert orders == generate_callcentre_orders(3, 40, messy_share=0.5)
    keys = {"external_id", "channel", "entered_at", "operator", "customer", "delivery", "lines", "payment",
            "comment", "total"}  # fmt: skip
    assert all(set(o) == keys and o["channel"] == "callcentre" for o in orders)
    assert len({o["external_id"] for o in orders}) == 40
    phones = [o["customer"]["phone"] for o in orders]
    assert any(not p.startswith("+79") for p in phones)  # operators type phones in many formats
    clean = generate_callcentre_orders(3, 40, messy_share=0.0)
    assert all(o["customer"]["phone"].startswith("+79") for o in clean)
    assert all(isinstance(ln["qty"], int) for o in clean for ln in o["lines"])

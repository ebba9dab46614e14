"""Fuzz: a hostile row in a POS end-of-day file is quarantined with its row number; the rest of the file
gets in.

Each example writes one file: two valid receipts and a third receipt whose row is hostile (a cell replaced by
a hostile value — NUL, lone surrogates written as the invalid UTF-8 a broken till produces, huge or boolean
quantities, amounts beyond ``numeric(12,2)``, 1 MB names — or the row given too many or too few fields), the
hostile row in the middle of the file. Properties: processing and normalising the file raise nothing; the
file is recorded; both valid receipts become orders with the SKUs and quantities of their rows; the hostile
receipt becomes an order with exactly its rows' SKUs and quantities, or is quarantined with a reason (one that
names the row's line when the row itself is refused), or is a return (kept raw, creates nothing);
``check_invariants`` finds nothing.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms_ops.channels import registry
from oms_ops.channels.base import id_problem
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.pos import COLUMNS, process_file
from oms_ops.invariants import check_invariants
from tests.fuzz.conftest import FUZZ, reset
from tests.fuzz.strategies import KNOWN_NUMBERS, hostile_text


def row(receipt: str, line_no: int, sku: str, qty: int = 1, price: str = "990.00") -> dict[str, str]:
    amount = f"{int(qty) * float(price):.2f}"
    return {
        "receipt_id": receipt,
        "store_code": "S1",
        "business_date": "2025-03-03",
        "sold_at": "2025-03-03T12:00:00+03:00",
        "line_no": str(line_no),
        "sku": sku,
        "barcode": "4600000000001",
        "name": "Товар",
        "qty": str(qty),
        "price": price,
        "discount": "0.00",
        "amount": amount,
        "payment_method": "card",
        "operation": "sale",
        "cashier_id": "C-7",
        "currency": "RUB",
    }


VALID = [row("R1", 1, "SKU-1", 2), row("R1", 2, "SKU-2", 1), row("R2", 1, "SKU-3", 3)]

cell_value = st.one_of(hostile_text, st.sampled_from([str(x) for x in KNOWN_NUMBERS]))


@st.composite
def hostile_rows(draw) -> tuple[list[str], str]:
    """The hostile receipt's row as CSV fields, and what was done to it."""
    r = row("R3", 1, "SKU-4", 2)
    kind = draw(st.sampled_from(["cell", "cell", "cell", "two cells", "extra field", "missing field"]))
    for _ in range(2 if kind == "two cells" else 1):
        r[draw(st.sampled_from(COLUMNS))] = draw(cell_value)
    fields = [r[c] for c in COLUMNS]
    if kind == "extra field":
        fields.append(draw(cell_value))
    elif kind == "missing field":
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    return fields, kind


def write_file(path: Path, hostile: list[str]) -> int:
    """The file (valid rows around the hostile one); returns the hostile row's line number."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerow([VALID[0][c] for c in COLUMNS])
    w.writerow(hostile)
    w.writerow([VALID[1][c] for c in COLUMNS])
    w.writerow([VALID[2][c] for c in COLUMNS])
    # a lone surrogate reaches the file as the invalid UTF-8 a broken encoder writes
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass"))
    return 3


def receipt_lines(conn, receipt: str) -> list[tuple[str, int]] | None:
    rows = conn.execute(
        """SELECT l.sku, l.qty FROM oms.orders o JOIN oms.order_lines l USING (order_id)
           WHERE o.channel_code = 'offline' AND o.external_id = %s ORDER BY l.line_no""",
        (receipt,),
    ).fetchall()
    return [tuple(r) for r in rows] or None


def check_file(conn, path: Path, hostile: list[str], line: int) -> str:
    assert (
        conn.execute(
            "SELECT count(*) FROM connectors.processed_files WHERE file_name = %s", (path.name,)
        ).fetchone()[0]
        == 1
    )
    assert receipt_lines(conn, "R1") == [("SKU-1", 2), ("SKU-2", 1)]
    assert receipt_lines(conn, "R2") == [("SKU-3", 3)]
    quarantine = conn.execute("SELECT source, reason FROM raw.quarantine").fetchall()
    assert all(r and r.strip() for _, r in quarantine)
    orders = conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM raw.pending_orders").fetchone()[0] == 0
    fields = dict(zip(COLUMNS, hostile, strict=False))
    receipt = fields.get("receipt_id")
    searchable = receipt and receipt not in ("R1", "R2") and not id_problem(receipt)
    got = receipt_lines(conn, receipt) if searchable else None
    if got is not None:  # accepted: exactly the row's SKU and quantity
        assert got == [(fields["sku"].strip(), int(fields["qty"].strip()))]
        assert orders == 3 and not quarantine
        outcome = "accepted"
    elif quarantine:
        assert orders == 2 and len(quarantine) == 1, quarantine
        source, reason = quarantine[0]
        if source == "pos":  # refused at the row: the reason names the line
            assert f"line {line}" in reason, reason
            outcome = "row quarantined"
        else:
            outcome = "receipt quarantined at normalisation"
    else:
        assert orders == 2
        assert (fields.get("operation") or "").strip() == "return", (hostile, quarantine)
        outcome = "return receipt (kept raw)"
    assert check_invariants(conn) == []
    return outcome


def test_a_hostile_row_is_quarantined_and_the_rest_of_the_file_gets_in(fuzz_conn, tally, tmp_path):
    channel = registry.channel("offline")
    counter = iter(range(10**9))

    @FUZZ
    @given(case=hostile_rows())
    def run(case):
        fields, kind = case
        reset(fuzz_conn)
        path = tmp_path / f"sales_S1_2025-03-{next(counter):06d}.csv"
        line = write_file(path, fields)
        process_file(fuzz_conn, path)
        normalize_pending(fuzz_conn, channel)
        tally.add("pos", check_file(fuzz_conn, path, fields, line))
        tally.add("pos", "examples")

    run()


PROBE = [
    ("qty", "4294967299"),
    ("qty", "2147483648"),
    ("qty", "true"),
    ("qty", "10001"),
    ("price", "99999999999.99"),
    ("amount", "1E+400"),
    ("name", "Я" * 1_000_000),
    ("name", "a\x00b"),
    ("sku", "SKU\x00"),
    ("receipt_id", "R\x003"),
    ("sku", "SKU-\ud800"),
    ("cashier_id", "x" * 5000),
]


@pytest.mark.parametrize(("column", "value"), PROBE, ids=[f"{c}={v[:12]!r}" for c, v in PROBE])
def test_the_probes_triggers_in_a_pos_file(fuzz_conn, tally, tmp_path, column, value):
    r = row("R3", 1, "SKU-4", 2)
    r[column] = value
    fields = [r[c] for c in COLUMNS]
    reset(fuzz_conn)
    path = tmp_path / "sales_S1_2025-03-03.csv"
    line = write_file(path, fields)
    process_file(fuzz_conn, path)
    normalize_pending(fuzz_conn, registry.channel("offline"))
    outcome = check_file(fuzz_conn, path, fields, line)
    tally.add("pos (probe triggers)", outcome)
    if column in ("qty", "price", "amount", "sku", "receipt_id", "cashier_id"):
        assert outcome == "row quarantined"  # never wrapped, never a whole-file failure
    if column == "name" and outcome == "accepted":
        assert (
            "\x00" not in fuzz_conn.execute("SELECT string_agg(name, '') FROM oms.order_lines").fetchone()[0]
        )

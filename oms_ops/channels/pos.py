"""Offline stores: end-of-day sales CSVs from the POS drop folder become orders of the ``offline`` channel.

A file (``sales_<store>_<YYYY-MM-DD>.csv``; dot-files are half-written and ignored) is read row by row (a row
the tills garbled — undecodable bytes, a wrong number of fields, NUL — is that row's problem, never the
file's), every row is validated (pydantic, with the hostile-input policy and the ``limits`` of the business
configuration: ids and codes with control characters refused, names cleaned, quantities and amounts
bounded), rows are grouped into receipts (sorted by ``line_no``; exact duplicate rows are
dropped), and in ONE transaction: each receipt is stored raw (external id = ``receipt_id``), each receipt with
a bad row is quarantined whole with the reasons of its bad rows (a receipt missing a line must not become a
smaller order), and the file is recorded in ``connectors.processed_files`` — so a re-run skips it, and a
crash before the commit leaves it unprocessed. Then the pending receipts are normalised.

A sale receipt becomes an order picked up at the till: ``store_pickup`` at the store's OMS location, paid.
Return receipts carry no reference to the original sale, so they are kept raw but create nothing (the WMS
stock snapshot accounts for the returned unit).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from oms_ops.channels.base import (
    Channel,
    ChannelChecks,
    IngestResult,
    Int,
    Mapped,
    MappingContext,
    clean_text,
    id_problem,
    intake_limits,
    quarantine_safely,
    validation_text,
)
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.rawstore import store_payloads
from oms_ops.connectors.state import record_success
from oms_ops.orders import INT4_MAX

CODE = "offline"
SOURCE = "pos"
PATTERN = "sales_*.csv"
COLUMNS = (
    "receipt_id", "store_code", "business_date", "sold_at", "line_no", "sku", "barcode", "name", "qty", "price",
    "discount", "amount", "payment_method", "operation", "cashier_id", "currency",
)  # fmt: skip


def _id_of(kind: str) -> AfterValidator:
    """An id or code of a row (``base.id_problem``: no control characters, at most the kind's length)."""

    def check(value: str) -> str:
        problem = id_problem(value, getattr(intake_limits().max_text_length, kind), kind=kind)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _free_text(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) else value


def _name_length(value: str | None) -> str | None:
    limit = intake_limits().max_text_length.name
    if value is not None and len(value) > limit:
        raise ValueError(f"{len(value)} characters, more than limits.max_text_length.name ({limit})")
    return value


def _at_most(limit_name: str) -> AfterValidator:
    """A number bounded by ``limits.<limit_name>`` of the business configuration."""

    def check(value: Any) -> Any:
        limit = getattr(intake_limits(), limit_name)
        if value > limit:
            raise ValueError(f"{value} is more than limits.{limit_name} ({limit})")
        return value

    return AfterValidator(check)


Id = Annotated[str, Field(min_length=1), _id_of("id")]
Code = Annotated[str, Field(min_length=1), _id_of("code")]


class PosRow(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    receipt_id: Id
    store_code: Code
    business_date: date
    sold_at: AwareDatetime
    line_no: Int = Field(ge=1, le=INT4_MAX)
    sku: Code
    barcode: Code | None = None
    name: Annotated[str | None, BeforeValidator(_free_text), AfterValidator(_name_length)] = None
    qty: Annotated[Int, Field(gt=0), _at_most("max_line_quantity")]
    price: Annotated[Decimal, Field(ge=0), _at_most("max_unit_price")]
    discount: Annotated[Decimal, Field(ge=0), _at_most("max_order_total")]
    amount: Annotated[Decimal, Field(ge=0), _at_most("max_order_total")]
    payment_method: Code
    operation: Literal["sale", "return"]
    cashier_id: Id | None = None
    currency: Code = "RUB"


@dataclass
class FileResult:
    file_name: str
    rows: int = 0
    receipts: int = 0
    quarantined: int = 0
    duplicate_rows: int = 0
    skipped: bool = False  # processed before


@dataclass
class PosResult:
    files: list[FileResult] = field(default_factory=list)
    normalized: Any = None

    @property
    def processed(self) -> list[str]:
        return [f.file_name for f in self.files if not f.skipped]


def pending_files(conn: psycopg.Connection, drop_dir: Path) -> list[Path]:
    """Files in the drop folder not processed yet (oldest name first; dot-files ignored)."""
    drop_dir = Path(drop_dir)
    if not drop_dir.is_dir():
        return []
    names = sorted(p for p in drop_dir.glob(PATTERN) if not p.name.startswith("."))
    done = {
        r[0]
        for r in conn.execute(
            "SELECT file_name FROM connectors.processed_files WHERE source = %s AND file_name = ANY(%s)",
            (SOURCE, [p.name for p in names]),
        ).fetchall()
    }
    return [p for p in names if p.name not in done]


# one field may hold up to a whole payload (a garbled row is refused by the limits, not by the reader)
csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))


def read_records(data: bytes, name: str = "file") -> list[tuple[int, dict[str, str | None], str | None]]:
    """The CSV as strings, ``(line number, row, problem)`` per record (validation is ours, not the CSV
    reader's guesses; an empty field is None). Undecodable bytes become U+FFFD (refused in ids, kept in
    names); a record with the wrong number of fields carries the problem. ValueError: no header, or the
    header lacks columns (the file as a whole is unusable)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", "replace"), newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    at = {c: header.index(c) for c in COLUMNS}
    out: list[tuple[int, dict[str, str | None], str | None]] = []
    end = reader.line_num
    for rec in reader:
        start, end = end + 1, reader.line_num
        if not rec:  # a blank line
            continue
        row = {c: (rec[i] or None) if i < len(rec) else None for c, i in at.items()}
        problem = None if len(rec) == len(header) else f"{len(rec)} fields, the header has {len(header)}"
        out.append((start, row, problem))
    return out


def read_rows(path: Path) -> list[dict[str, str | None]]:
    """The CSV's rows as strings (see :func:`read_records`)."""
    return [row for _, row, _ in read_records(Path(path).read_bytes(), Path(path).name)]


def process_file(conn: psycopg.Connection, path: Path, *, before_commit=None) -> FileResult:
    """Store one file's receipts (and quarantine its bad receipts) and record it, in one transaction."""
    data = path.read_bytes()
    result = FileResult(path.name)
    try:
        records = read_records(data, path.name)
    except (ValueError, csv.Error) as exc:
        records, file_error = [], f"unreadable file: {exc}"
    else:
        file_error = None
    result.rows = len(records)
    receipts: dict[str, list[tuple[int, dict, PosRow | None, str | None]]] = defaultdict(list)
    for n, raw, problem in records:
        if problem:
            row, err = None, f"line {n}: {problem}"
        else:
            try:
                row, err = PosRow.model_validate(raw), None
            except ValidationError as exc:
                row, err = None, f"line {n}: {validation_text(exc)}"
        receipts[raw.get("receipt_id") or f"{path.name}:line{n}"].append((n, raw, row, err))
    items: list[tuple[str, dict]] = []
    bad: list[tuple[str, str | None, Any, str]] = []
    for rid, entries in receipts.items():
        errors = [e for _, _, _, e in entries if e]
        good = [r for _, _, r, _ in entries if r is not None]
        uniq: dict[int, PosRow] = {}
        for r in good:
            prev = uniq.get(r.line_no)
            if prev is None:
                uniq[r.line_no] = r
            elif prev == r:
                result.duplicate_rows += 1
            else:
                errors.append(f"line_no {r.line_no} appears twice with different content")
        if not errors and len({(r.store_code, r.operation, r.sold_at) for r in uniq.values()}) != 1:
            errors.append("rows of one receipt disagree on store, operation or time")
        if errors:
            bad.append(
                (
                    SOURCE,
                    rid,
                    {"file": path.name, "receipt_id": rid, "rows": [raw for _, raw, _, _ in entries]},
                    "; ".join(errors),
                )
            )
            continue
        lines = [uniq[k] for k in sorted(uniq)]
        head = lines[0]
        items.append(
            (
                rid,
                {
                    "file": path.name,
                    "receipt_id": rid,
                    "store_code": head.store_code,
                    "business_date": head.business_date.isoformat(),
                    "sold_at": head.sold_at.isoformat(),
                    "operation": head.operation,
                    "payment_method": head.payment_method,
                    "cashier_id": head.cashier_id,
                    "currency": head.currency,
                    "lines": [
                        {
                            "line_no": r.line_no,
                            "sku": r.sku,
                            "barcode": r.barcode,
                            "name": r.name,
                            "qty": r.qty,
                            "price": str(r.price),
                            "discount": str(r.discount),
                            "amount": str(r.amount),
                        }
                        for r in lines
                    ],
                },
            )
        )
    if file_error:
        bad.append((SOURCE, path.name, {"file": path.name}, file_error))
    result.receipts = len(items)
    result.quarantined = len(bad)

    with conn.transaction():
        inserted = conn.execute(
            """INSERT INTO connectors.processed_files (source, file_name, sha256, size_bytes, rows, receipts,
                                                      quarantined, summary)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING RETURNING file_name""",
            (
                SOURCE,
                path.name,
                hashlib.sha256(data).hexdigest(),
                len(data),
                result.rows,
                result.receipts,
                result.quarantined,
                f'{{"duplicate_rows": {result.duplicate_rows}}}',
            ),
        ).fetchone()
        if inserted is None:  # a concurrent run took it
            result.skipped = True
            return result
        store_payloads(conn, CODE, items)
        if bad:
            quarantine_safely(conn, bad)
        if before_commit:
            before_commit()
    return result


def ingest_pos(
    conn: psycopg.Connection,
    drop_dir: Path,
    *,
    normalize: bool = True,
    max_files: int | None = None,
    before_commit=None,
) -> PosResult:
    res = PosResult()
    for path in pending_files(conn, drop_dir)[:max_files]:
        res.files.append(process_file(conn, path, before_commit=before_commit))
    record_success(conn, CODE, sum(f.receipts for f in res.files))
    if normalize:
        res.normalized = normalize_pending(conn, CHANNEL)
    return res


# -- mapping --------------------------------------------------------------------------------------------------
def map_receipt(payload: dict, ctx: MappingContext) -> Mapped:
    rid = str(payload["receipt_id"])
    if payload.get("operation") == "return":
        return Mapped(rid, skip="POS return receipt: no reference to the original sale")
    store = ctx.location("pos", payload["store_code"]) or ctx.location("wms", payload["store_code"])
    if store is None:
        return Mapped(
            rid, error=f"unknown store {payload['store_code']!r} (no connectors.channel_locations row)"
        )
    lines = []
    for ln in payload["lines"]:
        qty = int(ln["qty"])
        unit = (Decimal(ln["amount"]) / qty).quantize(Decimal("0.01"))
        lines.append(
            {
                "sku": ln["sku"],
                "qty": qty,
                "unit_price": unit,
                "name": ln.get("name"),
                "line_no": int(ln["line_no"]),
            }
        )
    order = {
        "channel_code": CODE,
        "external_id": rid,
        "channel_order_number": rid,
        "placed_at": payload["sold_at"],
        "delivery_method": "store_pickup",
        "pickup_location_code": store,
        "payment_method": "prepaid",
        "payment_status": "paid",
        "currency": payload.get("currency") or "RUB",
        "lines": lines,
    }
    return Mapped(rid, order)


class DropFolder:
    """The POS "client": the folder the tills' end-of-day files are dropped into."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def from_endpoint(cls, ep, **_kw: Any) -> DropFolder:
        return cls(ep.get("drop_dir"))

    def close(self) -> None:
        """Nothing to release: a folder."""


def poll(conn: psycopg.Connection, folder: DropFolder, **kw: Any) -> IngestResult:
    """Read the new files of the drop folder (:func:`ingest_pos`) and report them as a feed run."""
    pos = ingest_pos(conn, folder.path, **kw)
    files = [f.__dict__ for f in pos.files if not f.skipped]
    res = IngestResult(CODE, pages=len(files), fetched=sum(f["receipts"] for f in files))
    res.extra = {
        "files": len(files),
        "receipts": res.fetched,
        "quarantined": sum(f["quarantined"] for f in files),
        "file_details": files,
    }
    if pos.normalized is not None:
        res.normalized = pos.normalized
    return res


CHANNEL = Channel(
    code=CODE,
    title="Shops' tills (POS end-of-day files)",
    system="pos",
    env={"drop_dir": "OMS_POS_DROP_DIR"},
    client=DropFolder.from_endpoint,
    poll=poll,
    feed="POS end-of-day CSV files from the drop folder → orders of the offline channel.",
    mapper=map_receipt,
    quarantine_sources=(CODE, SOURCE),
    # the tills send their files once a day
    checks=ChannelChecks(max_age_seconds=26 * 3600),
    instant_handover=True,
    drop_pattern=PATTERN,
)

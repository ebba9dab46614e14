"""Catalog import: products are upserted in bulk (COPY into a temp table, one INSERT … ON CONFLICT).

Only rows that really changed are written (``IS DISTINCT FROM``), so a nightly full catalog feed touches
nothing that did not change; invalid rows go to raw.quarantine (source 'catalog') and the rest is applied.
After an import, ``orders.release_resolved_unknown_sku_holds`` frees orders that were waiting for new SKUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oms_ops.db import run_in_transaction
from oms_ops.quarantine import quarantine_many

Dim = Annotated[Decimal, Field(ge=0, max_digits=8, decimal_places=1)]


class ProductRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    sku: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    weight_g: int = Field(ge=0)
    price: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
    length_cm: Dim | None = None
    width_cm: Dim | None = None
    height_cm: Dim | None = None
    barcode: str | None = None
    active: bool = True


COLUMNS = ("sku", "name", "weight_g", "length_cm", "width_cm", "height_cm", "price", "barcode", "active")


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: list[int] = field(default_factory=list)


def upsert_products(
    conn: psycopg.Connection, rows: Iterable[ProductRow | Mapping[str, Any]], *, source: str = "catalog"
) -> UpsertResult:
    """Insert new products and update changed ones (one transaction, set-based). A SKU listed twice: the
    last row wins. Returns counts; invalid rows are quarantined with the validation message."""
    items = list(rows)

    def run(c: psycopg.Connection) -> UpsertResult:
        res = UpsertResult()
        good: dict[str, ProductRow] = {}
        bad = []
        for item in items:
            try:
                p = item if isinstance(item, ProductRow) else ProductRow.model_validate(item)
            except ValidationError as exc:
                why = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
                )
                sku = item.get("sku") if isinstance(item, Mapping) else None
                bad.append((source, None if sku is None else str(sku), item, why))
                continue
            good[p.sku] = p
        if bad:
            res.quarantined = quarantine_many(c, bad)
        if not good:
            return res
        c.execute("CREATE TEMP TABLE _product_import (LIKE oms.products INCLUDING DEFAULTS) ON COMMIT DROP")
        with c.cursor().copy(f"COPY _product_import ({', '.join(COLUMNS)}) FROM STDIN") as cp:
            for p in good.values():
                cp.write_row([getattr(p, col) for col in COLUMNS])
        stats = c.execute(
            """INSERT INTO oms.products AS p (sku, name, weight_g, length_cm, width_cm, height_cm, price, barcode,
                                              active)
               SELECT sku, name, weight_g, length_cm, width_cm, height_cm, price, barcode, active FROM _product_import
               ON CONFLICT (sku) DO UPDATE SET
                   name = EXCLUDED.name, weight_g = EXCLUDED.weight_g, length_cm = EXCLUDED.length_cm,
                   width_cm = EXCLUDED.width_cm, height_cm = EXCLUDED.height_cm, price = EXCLUDED.price,
                   barcode = EXCLUDED.barcode, active = EXCLUDED.active, updated_at = now()
               WHERE (p.name, p.weight_g, p.length_cm, p.width_cm, p.height_cm, p.price, p.barcode, p.active)
                     IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.weight_g, EXCLUDED.length_cm, EXCLUDED.width_cm,
                                       EXCLUDED.height_cm, EXCLUDED.price, EXCLUDED.barcode, EXCLUDED.active)
               RETURNING (xmax = 0) AS inserted"""
        ).fetchall()
        res.inserted = sum(1 for (ins,) in stats if ins)
        res.updated = len(stats) - res.inserted
        res.unchanged = len(good) - len(stats)
        return res

    return run_in_transaction(conn, run)

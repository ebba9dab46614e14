"""Offline stores (POS): one end-of-day sales CSV per store per business day, dropped into a folder.

Why files: store tills in Russia typically export the day's receipts in a batch after closing; the OMS picks
the files up from a drop folder. The simulator writes each file atomically (to ``.<name>.tmp`` in the same
folder, then ``os.replace``), so a reader that ignores dot-files never sees a half-written file.

File: ``sales_<store_code>_<YYYY-MM-DD>.csv``, UTF-8, comma-separated, ``\\n`` line ends, header row, one row
per receipt line, written at 23:00 Moscow time of the business day (stores trade 10:00–22:00), also for days
without sales (header only: "no file" would be ambiguous). Columns (``COLUMNS``):

==================  ======================================================================================
receipt_id          ``<store>-<YYYYMMDD>-<nnnnn>``, unique per store and day
store_code          e.g. ``MSK-S01`` (see ``simulators.network``)
business_date       ``YYYY-MM-DD`` (local)
sold_at             local time with offset, ``2025-03-03T14:05:09+03:00``
line_no             1-based within the receipt
sku, barcode, name  catalog article, EAN-13, product name
qty                 integer > 0 (returns too; see ``operation``)
price               unit list price, RUB, ``1299.00``
discount            line discount, RUB
amount              ``qty × price − discount``, RUB
payment_method      ``card`` | ``cash`` | ``sbp``
operation           ``sale`` | ``return``
cashier_id          e.g. ``MSK-S01-K2``
currency            ``RUB``
==================  ======================================================================================

Faults (drawn per file with method ``FILE`` and path ``file:<store_code>``): ``malformed`` (non-numeric qty,
comma decimal price or empty SKU in ``share`` of the rows), ``duplicate`` (rows repeated), ``out_of_order``
(rows shuffled). When a day closes, the store's net sales are applied to the WMS store stock.
"""

from __future__ import annotations

import csv
import io
import os
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import SimContext, Simulator
from simulators.clock import iso_z
from simulators.generator import DEFAULT_PAYMENT_MIX, MOSCOW_UTC_OFFSET, GeneratedOrder, OrderGenerator
from simulators.network import STORES, Location

COLUMNS = (
    "receipt_id", "store_code", "business_date", "sold_at", "line_no", "sku", "barcode", "name", "qty", "price",
    "discount", "amount", "payment_method", "operation", "cashier_id", "currency",
)  # fmt: skip
OPEN_HOUR, CLOSE_HOUR, EXPORT_HOUR = 10, 22, 23
#: trading hours only (Moscow time); mean over the day stays 1.0 so ``rate`` is orders per minute per day
STORE_PROFILE = tuple(
    24 / (CLOSE_HOUR - OPEN_HOUR) if OPEN_HOUR <= h < CLOSE_HOUR else 0.0 for h in range(24)
)
LOCAL = timezone(timedelta(hours=MOSCOW_UTC_OFFSET))
RETURN_SHARE = 0.03


class PosSimulator(Simulator):
    name = "pos"

    def __init__(
        self,
        ctx: SimContext,
        *,
        drop_dir: Path,
        rate_per_store: float | None = None,
        stores: tuple[Location, ...] = STORES,
        wms=None,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.drop_dir = Path(drop_dir)
        self.drop_dir.mkdir(parents=True, exist_ok=True)
        self.stores = stores
        self.wms = wms
        rate = rate_per_store if rate_per_store is not None else max(ctx.rate / 10, 0.1)
        self.gens = {
            s.code: OrderGenerator(
                ctx.seed,
                f"pos:{s.code}",
                rate,
                catalog=ctx.catalog,
                start=ctx.clock.start,
                payment_mix=DEFAULT_PAYMENT_MIX["pos"],
                delivery_mix={"store_pickup": 1.0},
                cancel_share=0.0,
                hourly_profile=STORE_PROFILE,
            )  # fmt: skip
            for s in stores
        }
        self.pending: dict[tuple[str, date], list[GeneratedOrder]] = {}
        first_day = (ctx.clock.start.astimezone(LOCAL)).date()
        self.last_closed: dict[str, date] = {s.code: first_day - timedelta(days=1) for s in stores}
        self.files: list[dict] = []

    def credentials(self) -> dict:
        return {"drop_dir": str(self.drop_dir)}

    @staticmethod
    def export_time(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, EXPORT_HOUR, tzinfo=LOCAL)

    def sync(self) -> None:
        now = self.now
        for store in self.stores:
            for sale in self.gens[store.code].until(now):
                day = sale.created_at.astimezone(LOCAL).date()
                self.pending.setdefault((store.code, day), []).append(sale)
            day = self.last_closed[store.code] + timedelta(days=1)
            while self.export_time(day) <= now:
                self._close_day(store, day)
                self.last_closed[store.code] = day
                day += timedelta(days=1)

    def _rows(self, store: Location, day: date, sales: list[GeneratedOrder]) -> list[dict]:
        rows = []
        for n, sale in enumerate(sales, start=1):
            rng = random.Random(sale.entropy)
            operation = "return" if rng.random() < RETURN_SHARE else "sale"
            cashier = f"{store.code}-K{rng.randint(1, 3)}"
            for line_no, line in enumerate(sale.lines, start=1):
                product = self.ctx.products[line.sku]
                discount = Decimal("0.00")
                if operation == "sale" and rng.random() < 0.1:
                    discount = (line.amount * Decimal(rng.choice((5, 10, 15, 20))) / 100).quantize(
                        Decimal("0.01")
                    )
                rows.append({
                    "receipt_id": f"{store.code}-{day:%Y%m%d}-{n:05d}",
                    "store_code": store.code,
                    "business_date": day.isoformat(),
                    "sold_at": sale.created_at.astimezone(LOCAL).isoformat(timespec="seconds"),
                    "line_no": line_no,
                    "sku": line.sku,
                    "barcode": product.barcode,
                    "name": product.name,
                    "qty": line.qty,
                    "price": f"{line.unit_price:.2f}",
                    "discount": f"{discount:.2f}",
                    "amount": f"{line.amount - discount:.2f}",
                    "payment_method": sale.payment_method,
                    "operation": operation,
                    "cashier_id": cashier,
                    "currency": "RUB",
                })  # fmt: skip
        return rows

    def _close_day(self, store: Location, day: date) -> None:
        sales = self.pending.pop((store.code, day), [])
        rows = self._rows(store, day, sales)
        net: dict[str, int] = {}
        for row in rows:
            sign = -1 if row["operation"] == "return" else 1
            net[row["sku"]] = net.get(row["sku"], 0) + sign * int(row["qty"])
        fs = self.faults.draw("FILE", f"file:{store.code}")
        if fs and rows:
            rows = fs.apply_records(rows, _malform_row)
        name = f"sales_{store.code}_{day.isoformat()}.csv"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        tmp = self.drop_dir / f".{name}.tmp"
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, self.drop_dir / name)
        self.files.append({
            "name": name, "store_code": store.code, "business_date": day.isoformat(), "rows": len(rows),
            "receipts": len(sales), "written_at": iso_z(self.now), "faults": fs.kinds,
        })  # fmt: skip
        if self.wms is not None:
            self.wms.apply_sales(store.code, net, name, self.export_time(day))

    def control_routes(self) -> list[Route]:
        async def files(request: Request) -> Response:
            with self.lock:
                self.sync()
                return JSONResponse({"drop_dir": str(self.drop_dir), "files": list(self.files)})

        return [Route("/_sim/files", files, methods=["GET"])]

    def state(self) -> dict:
        return {
            "drop_dir": str(self.drop_dir),
            "files": len(self.files),
            "open_days": sorted({f"{s}/{d}" for (s, d) in self.pending}),
        }


def _malform_row(row: dict, rng: random.Random) -> None:
    choice = rng.randrange(3)
    if choice == 0:
        row["qty"] = "два"
    elif choice == 1:
        row["price"] = row["price"].replace(".", ",")
    else:
        row["sku"] = ""

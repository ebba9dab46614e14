"""Offline stores (POS): sales CSVs per store dropped into a folder — once a day, or every few minutes.

Why files: store tills in Russia typically export the day's receipts in a batch after closing; the OMS picks
the files up from a drop folder. The simulator writes each file atomically (to ``.<name>.tmp`` in the same
folder, then ``os.replace``), so a reader that ignores dot-files never sees a half-written file.

Two cadences, the same format:

* end of day (default, ``drop_interval_s=None``): ``sales_<store_code>_<YYYY-MM-DD>.csv``, written at 23:00
  Moscow time of the business day (stores trade 10:00–22:00);
* frequent small drops (``drop_interval_s=N``, the demo's choice: a till that syncs every few minutes, so a
  store sale reaches the OMS minutes after it happened, not at 23:00):
  ``sales_<store_code>_<YYYY-MM-DD>_<seq>.csv`` with the receipts of one window of N simulated seconds.
  Windows are aligned to local midnight (N must divide a day), ``seq`` is the window's 1-based number in the
  business day, four digits (``_0001`` covers 00:00–00:05 with N = 300), and a file is written when its
  window ends. Receipt numbers run on through the day's drops, so ``receipt_id`` stays unique per store and
  day and a receipt never spans two files.

Either way a file is written also when nothing was sold (header only: "no file" would be ambiguous), UTF-8,
comma-separated, ``\\n`` line ends, header row, one row per receipt line. Columns (``COLUMNS``):

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
(rows shuffled). When a file is written, its net sales are applied to the WMS store stock.

Opening hours follow the stack's demand profile: 10–22 h under ``daily``; under ``steady`` (the demo) the
shops never close, so a newcomer sees store sales at any hour.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import UNCLEAN_ID_GAP, SimContext, Simulator, dt_in, dt_out, resume_stream
from simulators.clock import iso_z
from simulators.generator import (
    DEFAULT_PAYMENT_MIX,
    MOSCOW_UTC_OFFSET,
    DemandProfile,
    GeneratedOrder,
    OrderGenerator,
    demand_profile,
)
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
log = logging.getLogger("simulators.pos")
DAY_S = 24 * 3600
#: the shortest drop window: a file a minute per store is already more than any till sends
MIN_DROP_INTERVAL_S = 60


def store_hours(profile: DemandProfile) -> tuple[float, ...]:
    """The shops' hour-of-day curve under a demand profile: trading hours 10–22 in real life (``daily``),
    the profile's own curve otherwise (``steady``: the demo's shops never close)."""
    return STORE_PROFILE if profile.name == "daily" else profile.hourly


def check_drop_interval(seconds: float | None) -> int | None:
    """``None`` (end-of-day files) or whole seconds ≥ 60 that divide a day (windows never straddle midnight,
    so a window's number in the day is a stable file sequence number); ValueError otherwise."""
    if seconds is None:
        return None
    if seconds != int(seconds) or not MIN_DROP_INTERVAL_S <= seconds <= DAY_S or DAY_S % int(seconds):
        raise ValueError(
            f"drop_interval_s must be whole seconds between {MIN_DROP_INTERVAL_S} and {DAY_S} that divide a "
            f"day (60, 120, 300, 600, 900, 1800, 3600, …), got {seconds!r}"
        )
    return int(seconds)


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
        drop_interval_s: float | None = None,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.drop_dir = Path(drop_dir)
        self.drop_dir.mkdir(parents=True, exist_ok=True)
        self.stores = stores
        self.wms = wms
        self.drop_interval = check_drop_interval(drop_interval_s)
        profile = demand_profile(ctx.profile)
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
                hourly_profile=store_hours(profile),
                profile=profile,
            )  # fmt: skip
            for s in stores
        }
        #: sales not written yet, by (store, business day) — or (store, day, window) with drops
        self.pending: dict[tuple, list[GeneratedOrder]] = {}
        first_day = (ctx.clock.start.astimezone(LOCAL)).date()
        self.last_closed: dict[str, date] = {s.code: first_day - timedelta(days=1) for s in stores}
        #: drops: the next window to write per store (the one the clock started in, first)
        first_window = self.window_of(ctx.clock.start) if self.drop_interval else (first_day, 1)
        self.next_window: dict[str, tuple[date, int]] = {s.code: first_window for s in stores}
        #: receipts numbered so far per (store, business day), across the day's drops
        self.receipt_count: dict[tuple[str, date], int] = {}
        self.files: list[dict] = []
        #: after a restart: when this run took over (files of the time the tills were off are not written)
        self.resumed_at: datetime | None = None

    def credentials(self) -> dict:
        return {"drop_dir": str(self.drop_dir)}

    @staticmethod
    def export_time(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, EXPORT_HOUR, tzinfo=LOCAL)

    # -- drop windows -----------------------------------------------------------------------------------
    def window_of(self, at: datetime) -> tuple[date, int]:
        """(business day, 1-based window number in that day) of a moment, for drops."""
        assert self.drop_interval
        local = at.astimezone(LOCAL)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return local.date(), int((local - midnight).total_seconds() // self.drop_interval) + 1

    def window_end(self, day: date, seq: int) -> datetime:
        assert self.drop_interval
        return datetime(day.year, day.month, day.day, tzinfo=LOCAL) + timedelta(
            seconds=seq * self.drop_interval
        )

    def _next_window(self, day: date, seq: int) -> tuple[date, int]:
        assert self.drop_interval
        return (day, seq + 1) if seq < DAY_S // self.drop_interval else (day + timedelta(days=1), 1)

    # -- world ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        now = self.now
        for store in self.stores:
            sales = self.gens[store.code].until(now)
            self.dirty = self.dirty or bool(sales)
            if self.drop_interval:
                for sale in sales:
                    self.pending.setdefault((store.code, *self.window_of(sale.created_at)), []).append(sale)
                day, seq = self.next_window[store.code]
                while self.window_end(day, seq) <= now:
                    if (store.code, day, seq) in self.pending or not self._was_down(
                        self.window_end(day, seq)
                    ):
                        self._write_drop(store, day, seq)
                    day, seq = self._next_window(day, seq)
                self.next_window[store.code] = (day, seq)
                continue
            for sale in sales:
                day = sale.created_at.astimezone(LOCAL).date()
                self.pending.setdefault((store.code, day), []).append(sale)
            day = self.last_closed[store.code] + timedelta(days=1)
            while self.export_time(day) <= now:
                if (store.code, day) in self.pending or not self._was_down(self.export_time(day)):
                    self._close_day(store, day)
                self.last_closed[store.code] = day
                day += timedelta(days=1)

    def _was_down(self, due: datetime) -> bool:
        """A file due while the simulators were not running (before this run took over after a restart):
        a till that is off sends nothing, so such a file is written only if it holds sales."""
        return self.resumed_at is not None and due <= self.resumed_at

    def _rows(self, store: Location, day: date, sales: list[GeneratedOrder]) -> list[dict]:
        """CSV rows of ``sales``, receipts numbered on from the store's previous receipts of ``day``."""
        rows = []
        first = self.receipt_count.get((store.code, day), 0) + 1
        for n, sale in enumerate(sales, start=first):
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
        self.receipt_count[(store.code, day)] = first - 1 + len(sales)
        return rows

    def _close_day(self, store: Location, day: date) -> None:
        sales = self.pending.pop((store.code, day), [])
        self._write(store, day, sales, f"sales_{store.code}_{day.isoformat()}.csv", self.export_time(day))

    def _write_drop(self, store: Location, day: date, seq: int) -> None:
        sales = self.pending.pop((store.code, day, seq), [])
        name = f"sales_{store.code}_{day.isoformat()}_{seq:04d}.csv"
        self._write(store, day, sales, name, self.window_end(day, seq))

    def _write(
        self, store: Location, day: date, sales: list[GeneratedOrder], name: str, at: datetime
    ) -> None:
        """Write one file atomically, list it, and lower the WMS store stock by its net sales. A file of that
        name is never overwritten (the OMS reads a name once): after an unclean restart it is left alone."""
        self.dirty = True
        if (self.drop_dir / name).exists():
            log.warning("pos: %s exists already (written before a restart): not overwritten", name)
            return
        rows = self._rows(store, day, sales)
        net: dict[str, int] = {}
        for row in rows:
            sign = -1 if row["operation"] == "return" else 1
            net[row["sku"]] = net.get(row["sku"], 0) + sign * int(row["qty"])
        fs = self.faults.draw("FILE", f"file:{store.code}")
        if fs and rows:
            rows = fs.apply_records(rows, _malform_row)
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
            self.wms.apply_sales(store.code, net, name, at)

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        """Where each store's till is: stream positions, sales not yet in a file (by stream number and time,
        from which the generator rebuilds them), the next file due and the receipt numbers handed out."""
        return {
            "drop_interval_s": self.drop_interval,
            "produced": {code: gen.produced for code, gen in self.gens.items()},
            "pending": [
                [key[0], dt_out(sale.created_at), sale.seq]
                for key, sales in self.pending.items()
                for sale in sales
            ],
            "next_window": {code: [d.isoformat(), seq] for code, (d, seq) in self.next_window.items()},
            "last_closed": {code: d.isoformat() for code, d in self.last_closed.items()},
            "receipt_count": [[code, d.isoformat(), n] for (code, d), n in self.receipt_count.items()],
        }

    def load_state(self, data: dict, *, clean: bool) -> None:
        """Go on where the tills were: receipt numbers and file sequence numbers continue, so no receipt id
        and no file name comes out twice. After an unclean stop the sales after the last save are lost, the
        receipt numbers skip ahead, and files resume at the current window."""
        self.resumed_at = self.now
        for code, n in data["produced"].items():
            if code in self.gens:
                resume_stream(self.gens[code], int(n) + (0 if clean else UNCLEAN_ID_GAP))
        gap = 0 if clean else 1000
        self.receipt_count = {
            (code, date.fromisoformat(d)): int(n) + gap for code, d, n in data["receipt_count"]
        }
        self.last_closed.update(
            {c: date.fromisoformat(d) for c, d in data["last_closed"].items() if c in self.gens}
        )
        if not clean or data.get("drop_interval_s") != self.drop_interval:
            return  # pending sales are lost; files start at the window (or day) the clock is in now
        self.next_window.update(
            {
                c: (date.fromisoformat(d), int(seq))
                for c, (d, seq) in data["next_window"].items()
                if c in self.gens
            }
        )
        for code, created_at, seq in data["pending"]:
            if code in self.gens:
                sale = self.gens[code].order(int(seq), dt_in(created_at))
                key = (
                    (code, *self.window_of(sale.created_at))
                    if self.drop_interval
                    else (code, sale.created_at.astimezone(LOCAL).date())
                )
                self.pending.setdefault(key, []).append(sale)

    def control_routes(self) -> list[Route]:
        async def files(request: Request) -> Response:
            with self.lock:
                self.sync()
                return JSONResponse({"drop_dir": str(self.drop_dir), "files": list(self.files)})

        return [Route("/_sim/files", files, methods=["GET"])]

    def state(self) -> dict:
        return {
            "drop_dir": str(self.drop_dir),
            "cadence": f"every {self.drop_interval} s" if self.drop_interval else "end of day",
            "files": len(self.files),
            "open_batches": sorted({"/".join(str(k) for k in key) for key in self.pending}),
        }


def _malform_row(row: dict, rng: random.Random) -> None:
    choice = rng.randrange(3)
    if choice == 0:
        row["qty"] = "два"
    elif choice == 1:
        row["price"] = row["price"].replace(".", ",")
    else:
        row["sku"] = ""

"""The own courier's route sheet: one PDF per location and day listing the parcels the courier carries.

A courier without an app works from paper: which parcels to take, where each goes, whom to call, how much
cash to collect, and a column to sign on delivery. The rows come from ``read_model.courier_route`` (parcels
handed over that day plus those waiting for hand-over); this module only lays them out — A4 landscape, a
header with the location and the day, one table row per parcel (the address wrapped over two lines), page
numbers and the hand-over signatures on every page — with the project's own writer (:mod:`oms_ops.pdf`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from oms_ops.pdf import PdfDocument, fit, text_width

STATUS_TEXT = {
    "created": "к выдаче",
    "label_printed": "к выдаче",
    "handed_over": "в доставке",
    "in_transit": "в доставке",
    "delivered": "доставлено",
    "ready_for_pickup": "в магазине",
    "picked_up": "получено",
    "not_delivered": "не доставлено",
}
#: (header, width in points) of the table columns; the address takes what is left of the page
COLUMNS = (
    ("№", 22),
    ("Отправление", 78),
    ("Заказ", 72),
    ("Получатель", 110),
    ("Телефон", 84),
    ("Адрес", 0),
    ("Ед.", 26),
    ("Наличные", 58),
    ("Статус", 64),
    ("Подпись", 70),
)
MARGIN = 28
FONT = 8.0
ROW_HEIGHT = 24.0


def _money(value: Any) -> str:
    if value is None:
        return ""
    return f"{Decimal(str(value)):,.2f}".replace(",", "\u00a0")


def _wrap(text: str, width: float, size: float, lines: int = 2) -> list[str]:
    """``text`` in at most ``lines`` lines of ``width`` points (the last one shortened with an ellipsis)."""
    words, out, current = text.split(), [], ""
    for i, word in enumerate(words):
        candidate = f"{current} {word}".strip()
        if text_width(candidate, size) <= width:
            current = candidate
            continue
        if current:
            out.append(current)
        current = word
        if len(out) == lines - 1:
            current = " ".join(words[i:])
            break
    out.append(current)
    return [fit(line, width, size) for line in out[:lines]]


def render(
    rows: Sequence[Mapping[str, Any]],
    *,
    location_code: str,
    location_name: str,
    city: str,
    day: date,
    printed_at: datetime,
) -> bytes:
    """The route sheet of ``location`` on ``day`` for ``rows`` (``read_model.courier_route``), as PDF bytes.
    An empty route still gives a page that says so (the courier's paper trail for the day)."""
    doc = PdfDocument("A4-landscape")
    page_w, page_h = doc.size
    widths = [w for _, w in COLUMNS]
    widths[5] = page_w - 2 * MARGIN - sum(widths)
    xs = [MARGIN + sum(widths[:i]) for i in range(len(widths))]
    cash = sum(Decimal(str(r["cash_to_collect"])) for r in rows if r.get("cash_to_collect") is not None)
    units = sum(int(r.get("units") or 0) for r in rows)
    header_bottom = page_h - MARGIN - 78
    footer_top = MARGIN + 40
    per_page = max(1, int((header_bottom - footer_top - 16) // ROW_HEIGHT))
    chunks = [rows[i : i + per_page] for i in range(0, len(rows), per_page)] or [[]]
    for number, chunk in enumerate(chunks, start=1):
        page = doc.page()
        top = page_h - MARGIN
        page.text(MARGIN, top - 16, "Маршрутный лист курьера", size=16)
        page.text(
            MARGIN,
            top - 34,
            f"Отправка: {location_name} ({location_code}), {city}   ·   Дата: {day:%d.%m.%Y}",
            size=10,
        )
        page.text(
            MARGIN,
            top - 50,
            f"Отправлений: {len(rows)}   ·   Единиц: {units}   ·   Наличными к получению: {_money(cash)} руб.",
            size=10,
        )
        page.text(page_w - MARGIN - 150, top - 16, f"Напечатано {printed_at:%d.%m.%Y %H:%M}", size=8)
        y = header_bottom
        for x, (title, _) in zip(xs, COLUMNS, strict=True):
            page.text(x + 2, y + 4, title, size=FONT)
        page.line(MARGIN, y, page_w - MARGIN, y, width=0.8)
        first = (number - 1) * per_page
        if not chunk:
            page.text(MARGIN + 2, y - 16, "Нет отправлений на этот день.", size=10)
        for i, r in enumerate(chunk):
            top_line = y - 10
            cells = [
                str(first + i + 1),
                str(r["shipment_number"]),
                str(r["order_number"]),
                str(r.get("customer_name") or ""),
                str(r.get("customer_phone") or ""),
                None,  # the address: two lines
                str(r.get("units") or ""),
                _money(r.get("cash_to_collect")),
                STATUS_TEXT.get(str(r["shipment_status"]), str(r["shipment_status"])),
                "",
            ]
            for j, (x, w, cell) in enumerate(zip(xs, widths, cells, strict=True)):
                if j == 5:
                    address = ", ".join(str(v) for v in (r.get("city"), r.get("address")) if v)
                    for k, line in enumerate(_wrap(address, w - 4, FONT)):
                        page.text(x + 2, top_line - k * 10, line, size=FONT)
                else:
                    page.text(x + 2, top_line, fit(cell, w - 4, FONT), size=FONT)
            y -= ROW_HEIGHT
            page.line(MARGIN, y, page_w - MARGIN, y, width=0.3)
        page.text(MARGIN, MARGIN + 18, "Выдал (склад): ____________________", size=9)
        page.text(MARGIN + 260, MARGIN + 18, "Принял (курьер): ____________________", size=9)
        page.text(page_w - MARGIN - 70, MARGIN + 18, f"Стр. {number} из {len(chunks)}", size=9)
    return doc.build(title=f"Маршрутный лист {location_code} {day:%Y-%m-%d}")

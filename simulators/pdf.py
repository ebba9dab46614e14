"""A minimal, valid PDF writer for carrier print forms (waybills and barcode labels).

Why hand-written: the carrier simulator must hand out a real PDF that viewers open and tests can check,
without adding a PDF dependency. The file is PDF 1.4 with the standard Helvetica font (no embedding), one
content stream per page, and a correct cross-reference table (each entry exactly 20 bytes, offsets counted
in bytes), so ``%PDF-`` … ``%%EOF`` parses in any reader.

Text is limited to what WinAnsi Helvetica can show: Cyrillic is transliterated. The "barcode" is a row of
bars derived from the digits plus the number in text — it looks like a label but is not meant to be scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simulators.generator import translit

PAGE_SIZES: dict[str, tuple[int, int]] = {
    "A4": (595, 842),
    "A5": (420, 595),
    "A6": (298, 420),
    "A7": (210, 298),
}


@dataclass(frozen=True)
class PdfPage:
    title: str
    lines: Sequence[str]
    barcode: str | None = None  # digits/letters rendered as bars + text


def _ascii(text: str) -> str:
    out = []
    for ch in text:
        if ord(ch) < 128:
            out.append(ch)
        else:
            t = translit(ch)
            out.append(t.upper() if ch.isupper() and t else t or "?")
    return "".join(out)


def _escape(text: str) -> str:
    return _ascii(text).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _bars(code: str, x: float, y: float, width: float, height: float) -> list[str]:
    """Bars from the characters of ``code`` (start/stop guards + 4 bars per character)."""
    modules: list[int] = [2, 1, 1, 1]  # start guard (bar, space, bar, space widths)
    for ch in code:
        v = ord(ch)
        modules += [1 + v % 3, 1 + (v // 3) % 2, 1 + (v // 6) % 3, 1 + (v // 18) % 2]
    modules += [2, 1, 2]
    unit = width / sum(modules)
    ops: list[str] = ["0 0 0 rg"]
    cx = x
    for i, m in enumerate(modules):
        w = m * unit
        if i % 2 == 0:
            ops.append(f"{cx:.2f} {y:.2f} {w:.2f} {height:.2f} re f")
        cx += w
    return ops


def _content(page: PdfPage, size: tuple[int, int]) -> bytes:
    w, h = size
    scale = w / 595
    margin = 40 * scale
    title_size, body_size = max(8, round(18 * scale)), max(6, round(11 * scale))
    ops = [
        "BT",
        f"/F1 {title_size} Tf",
        f"{margin:.2f} {h - margin - title_size:.2f} Td",
        f"({_escape(page.title)}) Tj",
        f"/F1 {body_size} Tf",
        f"{body_size * 1.5:.2f} TL",
        "T*",
    ]
    for line in page.lines:
        ops += ["T*", f"({_escape(line)}) Tj"]
    ops.append("ET")
    if page.barcode:
        bar_h = 60 * scale
        y = margin + body_size * 2
        ops += _bars(page.barcode, margin, y, w - 2 * margin, bar_h)
        ops += [
            "BT",
            f"/F1 {body_size} Tf",
            f"{margin:.2f} {margin:.2f} Td",
            f"(*{_escape(page.barcode)}*) Tj",
            "ET",
        ]
    return ("\n".join(ops) + "\n").encode("latin-1")


def build_pdf(pages: Sequence[PdfPage], *, page_format: str = "A4", title: str = "Print form") -> bytes:
    """Return the bytes of a PDF with one page per :class:`PdfPage`."""
    if not pages:
        raise ValueError("a PDF needs at least one page")
    size = PAGE_SIZES[page_format]
    objects: list[bytes] = []  # object i+1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog_id = add(b"")  # placeholders, filled once ids are known
    pages_id = add(b"")
    font_id = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    info_id = add(f"<< /Title ({_escape(title)}) /Producer (oms simulators) >>".encode("latin-1"))
    page_ids = []
    for page in pages:
        stream = _content(page, size)
        content_id = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
        page_ids.append(
            add(
                (
                    f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {size[0]} {size[1]}] "
                    f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {content_id} 0 R >>"
                ).encode("latin-1")
            )
        )
    objects[catalog_id - 1] = f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode("latin-1")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects[pages_id - 1] = f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode("latin-1")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode()
    out += b"0000000000 65535 f \n"
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root {catalog_id} 0 R /Info {info_id} 0 R >>\n"
        f"startxref\n{xref_at}\n%%EOF"
    ).encode()
    return bytes(out)

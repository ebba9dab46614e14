"""A small PDF writer for the OMS's own documents (the courier route sheet): text in Russian, lines, pages.

Why hand-written: the lock file has no PDF library (pillow only rasterises), and a route sheet needs little —
positioned text in one font and a few rules. The file is PDF 1.4 with the standard Helvetica font (not
embedded: every viewer has it or a metric-compatible substitute) in a single-byte encoding that puts the
Russian alphabet where Windows-1251 has it (``/Differences`` with the Adobe glyph names ``afii10017`` …), so
Cyrillic shows and copies as text; explicit ``/Widths`` (Helvetica's for Latin, Arial's for Cyrillic) let
:func:`text_width` fit text into table columns. Characters outside Latin-1 punctuation and Russian letters
are printed as ``?``. The cross-reference table is exact (20-byte entries, byte offsets).

    doc = PdfDocument("A4")
    page = doc.page()
    page.text(40, 800, "Маршрутный лист", size=16)
    page.line(40, 790, 555, 790)
    data = doc.build(title="Route sheet")
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE_SIZES: dict[str, tuple[int, int]] = {"A4": (595, 842), "A4-landscape": (842, 595), "A5": (420, 595)}

# Helvetica advance widths (1/1000 em) of WinAnsi 32..126
_ASCII_WIDTHS = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,  # space … /
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,  # 0 … ?
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,  # @ … O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,  # P … _
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,  # ` … o
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,  # p … ~
)  # fmt: skip
# Russian letters А…Я, а…я (widths of Arial, Helvetica's metric twin, which has them)
_UPPER_WIDTHS = (
    667, 656, 667, 542, 677, 667, 923, 604, 719, 719, 583, 656, 833, 722, 778, 719,
    667, 722, 611, 635, 760, 667, 740, 667, 917, 938, 792, 885, 656, 719, 1010, 722,
)  # fmt: skip
_LOWER_WIDTHS = (
    556, 573, 531, 365, 583, 556, 669, 458, 559, 559, 438, 583, 688, 552, 556, 542,
    556, 500, 458, 500, 823, 500, 573, 521, 802, 823, 625, 719, 521, 510, 750, 542,
)  # fmt: skip


def _afii_upper(i: int) -> str:
    """Adobe glyph name of the i-th letter of А…Я (Ё, afii10023, sits outside the run)."""
    return f"afii{10017 + i if i < 6 else 10018 + i}"


def _afii_lower(i: int) -> str:
    return f"afii{10065 + i if i < 6 else 10066 + i}"


#: character → (byte, width)
_ENCODING: dict[str, tuple[int, int]] = {chr(32 + i): (32 + i, w) for i, w in enumerate(_ASCII_WIDTHS)}
for _i in range(32):
    _ENCODING[chr(0x410 + _i)] = (192 + _i, _UPPER_WIDTHS[_i])
    _ENCODING[chr(0x430 + _i)] = (224 + _i, _LOWER_WIDTHS[_i])
_ENCODING.update(
    {
        "Ё": (168, 667),
        "ё": (184, 556),
        "№": (185, 1073),
        "«": (171, 556),
        "»": (187, 556),
        "–": (150, 556),
        "—": (151, 1000),
        "…": (133, 1000),
        "\u00a0": (160, 278),
        "°": (176, 400),
        "·": (183, 278),
        "„": (132, 333),
        "“": (147, 333),
        "”": (148, 333),
        "•": (149, 350),
    }
)
_QUESTION = _ENCODING["?"]
#: the glyphs at byte codes WinAnsi does not have there (Windows-1251 positions)
_DIFFERENCES = (
    "168 /afii10023 184 /afii10071 185 /afii61352 192 "
    + " ".join("/" + _afii_upper(i) for i in range(32))
    + " "
    + " ".join("/" + _afii_lower(i) for i in range(32))
)


def _widths_array() -> str:
    widths = [0] * 224  # codes 32..255
    for byte, width in _ENCODING.values():
        widths[byte - 32] = width
    return " ".join(str(w) for w in widths)


def encode(text: str) -> bytes:
    """``text`` in the document's single-byte encoding (whitespace → space; unknown characters → ``?``)."""
    out = bytearray()
    for ch in text:
        if ch in "\t\r\n":
            ch = " "
        out.append(_ENCODING.get(ch, _QUESTION)[0])
    return bytes(out)


def text_width(text: str, size: float) -> float:
    """The width of ``text`` at ``size`` points, as viewers will lay it out."""
    return sum(_ENCODING.get(ch, _QUESTION)[1] for ch in text) * size / 1000


def fit(text: str, width: float, size: float) -> str:
    """``text`` shortened with an ellipsis so that it fits ``width`` points at ``size``."""
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "…", size) > width:
        text = text[:-1]
    return text + "…" if text else ""


def _literal(data: bytes) -> bytes:
    """A PDF string literal: parentheses and backslashes escaped, bytes ≥ 128 as octal escapes."""
    out = bytearray(b"(")
    for b in data:
        if b in (0x28, 0x29, 0x5C):
            out += b"\\" + bytes([b])
        elif b >= 128:
            out += b"\\%03o" % b
        else:
            out.append(b)
    return bytes(out + b")")


@dataclass
class PdfPage:
    """One page: text runs and lines in points from the bottom-left corner."""

    ops: list[bytes] = field(default_factory=list)

    def text(self, x: float, y: float, text: str, *, size: float = 10) -> None:
        self.ops.append(b"BT /F1 %.1f Tf %.2f %.2f Td %s Tj ET" % (size, x, y, _literal(encode(text))))

    def line(self, x1: float, y1: float, x2: float, y2: float, *, width: float = 0.5) -> None:
        self.ops.append(b"%.2f w %.2f %.2f m %.2f %.2f l S" % (width, x1, y1, x2, y2))


class PdfDocument:
    """Pages of one size; :meth:`build` returns the file's bytes."""

    def __init__(self, page_format: str = "A4") -> None:
        self.size = PAGE_SIZES[page_format]
        self.pages: list[PdfPage] = []

    def page(self) -> PdfPage:
        page = PdfPage()
        self.pages.append(page)
        return page

    def build(self, *, title: str = "Document") -> bytes:
        if not self.pages:
            raise ValueError("a PDF needs at least one page")
        objects: list[bytes] = []

        def add(body: bytes) -> int:
            objects.append(body)
            return len(objects)

        catalog_id = add(b"")  # filled once the page tree's id is known
        pages_id = add(b"")
        font_id = add(
            (
                "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar 32 /LastChar 255 "
                f"/Widths [{_widths_array()}] "
                f"/Encoding << /Type /Encoding /BaseEncoding /WinAnsiEncoding /Differences [{_DIFFERENCES}] >> >>"
            ).encode("ascii")
        )
        info_id = add(b"<< /Title " + _literal(encode(title)) + b" /Producer (oms_ops.pdf) >>")
        page_ids = []
        w, h = self.size
        for page in self.pages:
            stream = b"\n".join(page.ops) + b"\n"
            content_id = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
            page_ids.append(
                add(
                    b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 %d 0 R >> >> "
                    b"/Contents %d 0 R >>" % (pages_id, w, h, font_id, content_id)
                )
            )
        objects[catalog_id - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
        kids = b" ".join(b"%d 0 R" % pid for pid in page_ids)
        objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))

        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
        xref_at = len(out)
        out += b"xref\n0 %d\n" % (len(objects) + 1)
        out += b"0000000000 65535 f \n"
        for off in offsets:
            out += b"%010d 00000 n \n" % off
        out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF" % (
            len(objects) + 1,
            catalog_id,
            info_id,
            xref_at,
        )
        return bytes(out)

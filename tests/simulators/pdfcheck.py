"""Structural PDF check (no PDF library is available here): header, trailer and every xref offset."""

import re


def assert_valid_pdf(data: bytes, pages: int) -> None:
    assert data.startswith(b"%PDF-") and data.endswith(b"%%EOF")
    startxref = int(re.search(rb"startxref\n(\d+)\n%%EOF$", data).group(1))
    assert data[startxref:].startswith(b"xref\n")
    m = re.match(rb"xref\n0 (\d+)\n", data[startxref:])
    count = int(m.group(1))
    table = data[startxref + m.end() :]
    entries = [table[i * 20 : (i + 1) * 20] for i in range(count)]
    assert entries[0] == b"0000000000 65535 f \n"
    for number, entry in enumerate(entries[1:], start=1):
        assert len(entry) == 20 and entry.endswith(b" n \n")
        offset = int(entry[:10])
        assert data[offset:].startswith(f"{number} 0 obj".encode()), number
    assert data.count(b"/Type /Page ") == pages

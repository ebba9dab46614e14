"""Data formats on the wire: which output formats stream, their content types, Native headers, multipart forms.

chdb encodes the data itself; what the server adds is knowledge of the formats' shapes — which ones can be sent
block by block, what ``Content-Type`` ClickHouse announces for each, the column header an empty Native result
still carries, and the form fields clickhouse-connect posts as ``multipart/form-data``.
"""

from __future__ import annotations

import re

from oms_ops.platform.clickhouse.protocol import ERR_BAD_ARGUMENTS, ERR_NOT_IMPLEMENTED, ClickHouseError

# Output formats whose per-block encodings concatenate into one valid stream (no global header or footer).
STREAMABLE_FORMATS = frozenset(
    name.lower()
    for name in (
        "Native",
        "TabSeparated",
        "TSV",
        "TabSeparatedRaw",
        "TSVRaw",
        "CSV",
        "RowBinary",
        "JSONEachRow",
        "JSONLines",
        "NDJSON",
        "JSONCompactEachRow",
        "JSONStringsEachRow",
        "JSONCompactStringsEachRow",
        "LineAsString",
    )
)


def _write_varint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def native_header_block(columns: list[tuple[str, str]]) -> bytes:
    """A zero-row Native block: column count, row count 0, then each name and type (zero rows carry no data)."""
    out = bytearray()
    _write_varint(len(columns), out)
    _write_varint(0, out)
    for name, type_name in columns:
        for text in (name, type_name):
            raw = text.encode("utf-8")
            _write_varint(len(raw), out)
            out += raw
    return bytes(out)


def content_type_for(fmt: str) -> str:
    """The ``Content-Type`` ClickHouse sends with a result in format ``fmt``."""
    lowered = fmt.lower()
    if lowered.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lowered.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lowered.startswith(("json", "ndjson")):
        return "application/json; charset=UTF-8"
    if lowered.startswith(("pretty", "vertical", "markdown", "values", "lineasstring", "xml", "template")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def parse_multipart(body: bytes, content_type: str) -> dict[str, str]:
    """Form fields of a multipart/form-data body (clickhouse-connect sends query and params this way when they
    are too long for the URL). External-data file parts are not supported and are rejected."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ClickHouseError.of(ERR_BAD_ARGUMENTS, "multipart/form-data without a boundary")
    delimiter = b"--" + match.group(1).encode()
    fields: dict[str, str] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, _, value = part.partition(b"\r\n\r\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        disposition = next(
            (
                line
                for line in head.decode("utf-8").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        name_match = re.search(r'\bname="([^"]*)"', disposition)
        if not name_match:
            continue
        if "filename=" in disposition:
            raise ClickHouseError.of(
                ERR_NOT_IMPLEMENTED, "External data is not supported by the embedded server"
            )
        fields[name_match.group(1)] = value.decode("utf-8")
    return fields

"""HTTP message bodies: reading a request body as it arrives, and the Content-Encodings of bodies both ways.

Request bodies come with ``Content-Length`` or chunked transfer encoding and may be compressed
(``Content-Encoding`` lz4, zstd, gzip, deflate, br); they are read in large pieces and decoded incrementally so an
insert is streamed into chdb without ever being held whole. Responses are compressed when the client accepts it
and the server wants it (``Accept-Encoding`` + ``enable_http_compression``).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable

from oms_ops.platform.clickhouse.protocol import ERR_BAD_ARGUMENTS, ERR_CANNOT_DECOMPRESS, ClickHouseError

# lz4 and zstd come with clickhouse-connect; brotli is optional. A codec whose module is missing is neither offered
# for responses nor accepted for request bodies.
try:
    import lz4.frame as lz4_frame
except ImportError:  # pragma: no cover - installed with clickhouse-connect
    lz4_frame = None
if sys.version_info >= (3, 14):
    from compression import zstd
else:
    try:
        from backports import zstd
    except ImportError:  # pragma: no cover - installed with clickhouse-connect
        zstd = None
try:
    import brotli
except ImportError:
    brotli = None

#: Request body read size; big reads keep the per-chunk Python overhead negligible.
READ_BYTES = 4 * 1024 * 1024


class Decoder:
    """Incremental decoder for one Content-Encoding; copes with concatenated frames/members.

    clickhouse-connect compresses every insert block as its own lz4 or zstd frame, so a body is a sequence of
    frames and each frame's end must restart the decoder on the leftover bytes.
    """

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._factory = self._make_factory(encoding)
        self._dec = self._factory() if self._factory else None

    @staticmethod
    def _make_factory(encoding: str) -> Callable[[], object] | None:
        if encoding in ("", "identity"):
            return None
        if encoding == "lz4":
            if lz4_frame is None:  # pragma: no cover - installed with clickhouse-connect
                raise ClickHouseError.of(ERR_BAD_ARGUMENTS, "Content-Encoding lz4 needs the lz4 package")
            return lz4_frame.LZ4FrameDecompressor
        if encoding == "zstd":
            if zstd is None:  # pragma: no cover - installed with clickhouse-connect
                raise ClickHouseError.of(
                    ERR_BAD_ARGUMENTS, "Content-Encoding zstd needs the backports.zstd package"
                )
            return zstd.ZstdDecompressor
        if encoding in ("gzip", "x-gzip"):
            return lambda: zlib.decompressobj(wbits=31)
        if encoding == "deflate":
            return lambda: zlib.decompressobj(wbits=15)
        if encoding == "br":
            if brotli is None:
                raise ClickHouseError.of(ERR_BAD_ARGUMENTS, "Content-Encoding br needs the brotli package")
            return brotli.Decompressor
        raise ClickHouseError.of(ERR_BAD_ARGUMENTS, f"Unknown Content-Encoding: {encoding}")

    def feed(self, data: bytes) -> bytes:
        if self._dec is None:
            return data
        out = []
        while data:
            dec = self._dec
            if self.encoding == "br":
                out.append(dec.process(data))
                break
            out.append(dec.decompress(data))
            if not getattr(dec, "eof", False):
                break
            data = dec.unused_data
            self._dec = self._factory()
        return b"".join(out)


class Encoder:
    """Streaming response compressor producing a single frame/stream for the whole response."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        if encoding == "lz4":
            self._comp = lz4_frame.LZ4FrameCompressor()
            self._pending = self._comp.begin()
        elif encoding == "zstd":
            self._comp = zstd.ZstdCompressor(level=1)
            self._pending = b""
        elif encoding == "gzip":
            self._comp = zlib.compressobj(1, wbits=31)
            self._pending = b""
        elif encoding == "deflate":
            self._comp = zlib.compressobj(1, wbits=15)
            self._pending = b""
        else:  # pragma: no cover - guarded by choose_encoding
            raise ValueError(encoding)

    def compress(self, data) -> bytes:
        out = self._pending + self._comp.compress(data)
        self._pending = b""
        return out

    def flush(self) -> bytes:
        out = self._pending + self._comp.flush()
        self._pending = b""
        return out


# Response encodings this server can produce, in order of preference.
_RESPONSE_ENCODINGS = [
    *(["lz4"] if lz4_frame is not None else []),
    *(["zstd"] if zstd is not None else []),
    "gzip",
    "deflate",
]


def choose_encoding(accept_encoding: str) -> str | None:
    """Pick the cheapest encoding the client accepts; lz4 first because compression here only costs CPU."""
    offered = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    for enc in _RESPONSE_ENCODINGS:
        if enc in offered:
            return enc
    return None


class BodyReader:
    """Reads a request body (Content-Length or chunked) in large pieces, decoding its Content-Encoding."""

    def __init__(self, rfile, headers, decoder: Decoder):
        self._rfile = rfile
        self._decoder = decoder
        te = (headers.get("Transfer-Encoding") or "").lower()
        self._chunked = "chunked" in te
        length = headers.get("Content-Length")
        self._remaining = int(length) if (length and not self._chunked) else 0
        self._chunk_left = 0
        self.eof = not self._chunked and self._remaining == 0

    def _raw(self) -> bytes:
        if self.eof:
            return b""
        if not self._chunked:
            data = self._rfile.read(min(self._remaining, READ_BYTES))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            self._remaining -= len(data)
            self.eof = self._remaining == 0
            return data
        if self._chunk_left == 0:
            line = self._rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection mid-body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line ending the body
                    trailer = self._rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                self.eof = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(self._chunk_left, READ_BYTES))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(3)  # CRLF after the chunk data
        return data

    def read(self) -> bytes:
        """Next piece of decoded body; b'' only at the end of the body."""
        while not self.eof:
            raw = self._raw()
            try:
                out = self._decoder.feed(raw)
            except Exception as exc:  # noqa: BLE001 - each codec raises its own error type
                raise ClickHouseError.of(
                    ERR_CANNOT_DECOMPRESS, f"Cannot decode {self._decoder.encoding} request body: {exc}"
                ) from None
            if out:
                return out
        return b""

    def read_all(self) -> bytes:
        parts = []
        while True:
            part = self.read()
            if not part:
                return b"".join(parts)
            parts.append(part)

    def drain(self) -> None:
        """Consume the rest of the body so the connection can be reused (or fail trying, then close)."""
        while not self.eof:
            self._raw()

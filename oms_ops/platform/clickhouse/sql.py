"""SQL scanning: just enough lexing to find an INSERT's data and an explicit FORMAT clause, plus quoting.

The server never parses SQL for meaning (chdb does); it only needs to know where an ``INSERT``'s statement ends
and its inline data begins, and which output format a query asked for. Text is scanned as latin-1 so that
character offsets equal byte offsets in the request body, and binary data following an INSERT's FORMAT clause can
be handed to chdb byte-exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

_TOKEN_RE = re.compile(
    r"""
    (?P<skip>[^'"`/\#\-A-Za-z_$\x80-\xff()\[\]{}]+|/(?!\*)|-(?!-)|\#(?![ !]))   # blanks, numbers, operators
    |(?P<comment>--[^\n]*|\#[ !][^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<quoted>'(?:[^'\\]+|\\.|'')*(?:'|\Z)|"(?:[^"\\]+|\\.|"")*(?:"|\Z)|`(?:[^`\\]+|\\.|``)*(?:`|\Z))
    |(?P<word>[A-Za-z_$\x80-\xff][A-Za-z0-9_$\x80-\xff]*)
    |(?P<open>[(\[{])
    |(?P<close>[)\]}])
    """,
    re.VERBOSE | re.DOTALL,
)


class _Token(NamedTuple):
    kind: str  # "word", "quoted", "open", "close"
    start: int
    end: int
    depth: int  # parenthesis/bracket depth the token sits at


def _tokens(text: str, start: int = 0) -> Iterator[_Token]:
    """Yield the significant ClickHouse tokens of ``text``: words, quoted strings/identifiers and brackets.

    Blanks, numbers, operators and comments are skipped in bulk by one regular expression, so even a
    multi-megabyte ``IN (...)`` list is scanned at C speed.
    """
    depth = 0
    for match in _TOKEN_RE.finditer(text, start):
        kind = match.lastgroup
        if kind == "skip" or kind == "comment":
            continue
        if kind == "open":
            yield _Token(kind, match.start(), match.end(), depth)
            depth += 1
        elif kind == "close":
            depth = max(0, depth - 1)
            yield _Token(kind, match.start(), match.end(), depth)
        else:
            yield _Token(kind, match.start(), match.end(), depth)


#: the tokenizer, for the access checks (:mod:`.access`), which read chdb's canonical form of a statement
tokens = _tokens


def first_keyword(text: str) -> str:
    """The statement's leading keyword in upper case (``SELECT``, ``INSERT``, ``USE``...), or '' if it has none."""
    for tok in _tokens(text):
        return text[tok.start : tok.end].upper() if tok.kind == "word" else ""
    return ""


@dataclass(frozen=True)
class InsertData:
    """Where an ``INSERT`` statement ends and its inline data begins (offsets into the scanned text)."""

    statement_end: int
    format: str
    data_start: int


def find_insert_data(text: str, complete: bool = True) -> InsertData | None:
    """Locate the data of ``INSERT ... FORMAT fmt <data>`` or ``INSERT ... VALUES <data>``.

    Returns None for statements without inline data (``INSERT ... SELECT``, ``FROM INFILE``) and, unless
    ``complete``, when the text ends before the data could start (the caller reads more of the body and asks
    again). Data starts after the format name, its trailing blanks and at most one newline — ClickHouse's own
    rule, which keeps binary data intact.
    """
    toks = _tokens(text)
    first = next(toks, None)
    if first is None or first.kind != "word" or text[first.start : first.end].upper() != "INSERT":
        return None
    for tok in toks:
        if tok.kind != "word" or tok.depth:
            continue
        word = text[tok.start : tok.end].upper()
        if word in ("SELECT", "WITH", "INFILE"):
            return None
        if word == "VALUES":
            return InsertData(tok.start, "Values", tok.end)
        if word == "FORMAT":
            fmt_tok = next(toks, None)
            if fmt_tok is None or fmt_tok.kind != "word" or (fmt_tok.end >= len(text) and not complete):
                return None
            pos = fmt_tok.end
            while pos < len(text) and text[pos] in " \t\f":
                pos += 1
            if text.startswith("\r", pos):
                pos += 1
            if text.startswith("\n", pos):
                pos += 1
            return InsertData(tok.start, text[fmt_tok.start : fmt_tok.end], pos)
    return None


@dataclass(frozen=True)
class OutputFormat:
    """An explicit top-level ``FORMAT name`` clause: canonical format name and the clause's span in the text."""

    name: str
    start: int
    end: int


def find_output_format(text: str, known_formats: dict[str, str]) -> OutputFormat | None:
    """Return the query's explicit top-level ``FORMAT name`` clause, if it has one.

    A name is only accepted when it is a known output format not followed by ``(``, so a column called
    ``format`` or the ``format(...)`` table function is not mistaken for a FORMAT clause.
    """
    found = None
    candidate: OutputFormat | None = None
    prev: _Token | None = None
    for tok in _tokens(text):
        if candidate is not None:
            if tok.kind != "open":
                found = candidate
            candidate = None
        if (
            tok.kind == "word"
            and prev is not None
            and prev.kind == "word"
            and prev.depth == 0
            and text[prev.start : prev.end].upper() == "FORMAT"
        ):
            canonical = known_formats.get(text[tok.start : tok.end].lower())
            if canonical:
                candidate = OutputFormat(canonical, prev.start, tok.end)
        prev = tok
    return candidate or found


def quote_identifier(name: str) -> str:
    """``name`` as a backquoted ClickHouse identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(value: str) -> str:
    """``value`` as a single-quoted ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

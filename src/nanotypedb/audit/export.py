"""Audit log exports: CSV that is safe to open in a spreadsheet, a JSON array or NDJSON, page by page.

A download of millions of entries never holds more than one page: pages are read by keyset
(seq > the last one sent) and each is encoded and sent before the next is read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from ..errors import ValidationFailed
from ..storage.audit import FIELDS, as_dict

FORMATS = ("json", "csv", "ndjson")
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
# 1,000 entries of a few hundred bytes each: big enough that a page's query and thread hop are
# noise, small enough that a download's memory stays well under a megabyte.
PAGE_ENTRIES = 1000
# What spreadsheets take as the start of a formula (OWASP, "CSV injection"), and the quote that
# marks a neutralised cell, so that a cell which really began with one stays unambiguous.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")

Row = Sequence[Any]


def parse_format(text: str | None) -> str:
    fmt = (text or "json").lower()
    if fmt not in FORMATS:
        raise ValidationFailed(f"Unknown export format {text!r}: expected one of {', '.join(FORMATS)}.")
    return fmt


def neutralise(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading `'`; everything else is left alone."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def restore(cell: str) -> str:
    """The original text of a cell read back from an exported CSV file."""
    return cell[1:] if cell.startswith("'") else cell


def download_url(fmt: str, **filters: str | None) -> str:
    """The streamed download with the same filters, for when exportAuditLog would return too much."""
    query = urlencode({"format": fmt, **{k: v for k, v in filters.items() if v}})
    return f"/api/audit/export?{query}"


class Encoder:
    """Turns pages of entries (rows of `_audit`) into the bytes of one export, in order."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._first = True

    def start(self) -> bytes:
        if self.fmt == "csv":
            return _csv([FIELDS])
        return b"[" if self.fmt == "json" else b""

    def page(self, rows: Iterable[Row]) -> bytes:
        if self.fmt == "csv":
            return _csv([neutralise(cell) for cell in row] for row in rows)
        lines = [orjson.dumps(as_dict(row)) for row in rows]
        if self.fmt == "ndjson":
            return b"".join(line + b"\n" for line in lines)
        chunk = b",\n".join(lines)
        if lines and not self._first:
            chunk = b",\n" + chunk
        self._first = self._first and not lines
        return chunk

    def end(self) -> bytes:
        return b"]\n" if self.fmt == "json" else b""


def _csv(rows: Iterable[Iterable[Any]]) -> bytes:
    out = io.StringIO()
    # QUOTE_MINIMAL and "\r\n" are the csv module's defaults: its reader takes back exactly this.
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def encode(fmt: str, rows: Iterable[Row]) -> bytes:
    """A whole (small) export at once."""
    encoder = Encoder(fmt)
    return encoder.start() + encoder.page(rows) + encoder.end()


Fetch = Callable[[int, int], list[tuple[Any, ...]]]


def stream(fmt: str, fetch: Fetch, page_entries: int = PAGE_ENTRIES) -> Iterator[bytes]:
    """The export, one chunk per page: `fetch(after_seq, limit)` reads the next page."""
    encoder = Encoder(fmt)
    yield encoder.start()
    after = 0
    while rows := fetch(after, page_entries):
        yield encoder.page(rows)
        after = rows[-1][0]
    yield encoder.end()


async def stream_async(
    fmt: str, fetch: Callable[[int, int], Awaitable[list[tuple[Any, ...]]]], page_entries: int = PAGE_ENTRIES
) -> AsyncIterator[bytes]:
    """`stream` for the HTTP download, whose pages are read off the event loop."""
    encoder = Encoder(fmt)
    yield encoder.start()
    after = 0
    while rows := await fetch(after, page_entries):
        yield encoder.page(rows)
        after = rows[-1][0]
    yield encoder.end()

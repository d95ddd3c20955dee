"""The audit chain and its exports on an in-memory database: hashing, verification, paging, CSV neutralisation."""

from __future__ import annotations

import csv
import io
import itertools
import json
import sqlite3
from collections.abc import Iterator

import pytest

from nanotypedb.audit import export
from nanotypedb.errors import ValidationFailed
from nanotypedb.storage import audit as store
from nanotypedb.storage.audit_verify import verify

ALICE = store.Origin("user", "alice", "createTask", "rid-1", "127.0.0.1")


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    for ddl in store.DDL:
        db.execute(ddl)
    log = store.AuditLog("dev")
    for i in range(1, 6):
        log.append(db, ALICE, [store.Act("insert", "tasks", i, None, {"id": i, "title": f"t{i}"})])
    yield db
    db.close()


def test_entries_are_contiguous_and_linked(conn: sqlite3.Connection) -> None:
    rows = conn.execute(f"SELECT {store.COLUMNS} FROM _audit ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][-2] == store.GENESIS
    for before, after in itertools.pairwise(rows):
        assert after[-2] == before[-1]
        assert store.entry_hash(after[-2], after[:-2]) == after[-1]
    assert verify(conn, "env:dev").ok


def test_several_groups_share_one_head_read(conn: sqlite3.Connection) -> None:
    bob = store.Origin("user", "bob", "createTask", "rid-2")
    acts = [store.Act("insert", "tasks", i, None, {"id": i}) for i in (6, 7)]
    assert store.AuditLog("dev").append_many(conn, [(ALICE, acts[:1]), (bob, acts[1:])]) == 7
    report = verify(conn, "env:dev")
    assert report.ok and report.entries == 7 and report.head_seq == 7


def test_secret_columns_are_redacted_and_others_kept() -> None:
    text = store._json({"id": 1, "api_token": "x", "password": "p", "tokens_used": 3, "webhook_secret": None})
    assert json.loads(text or "") == {
        "id": 1,
        "api_token": store.REDACTED,
        "password": store.REDACTED,
        "tokens_used": 3,
        "webhook_secret": None,
    }


def test_a_database_without_a_log_is_an_empty_chain() -> None:
    db = sqlite3.connect(":memory:")
    report = verify(db, "system")
    assert report.ok and report.entries == 0


@pytest.mark.parametrize("page_entries", [1, 2, 5, 1000])
@pytest.mark.parametrize("fmt", export.FORMATS)
def test_a_paged_export_is_the_same_whatever_the_page_size(
    conn: sqlite3.Connection, fmt: str, page_entries: int
) -> None:
    where = store.Filter()
    body = b"".join(export.stream(fmt, lambda after, n: store.page(conn, where, after, n), page_entries)).decode()
    if fmt == "json":
        seqs = [e["seq"] for e in json.loads(body)]
    elif fmt == "ndjson":
        seqs = [json.loads(line)["seq"] for line in body.splitlines()]
    else:
        seqs = [int(r["seq"]) for r in csv.DictReader(io.StringIO(body, newline=""))]
    assert seqs == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'x", "''x"),
        ("x=1", "x=1"),
        ("", ""),
        (-1, -1),
        (None, None),
    ],
)
def test_neutralise(cell: object, written: object) -> None:
    assert export.neutralise(cell) == written
    if isinstance(cell, str):
        assert export.restore(export.neutralise(cell)) == cell


def test_filters_parse_dates_and_actors() -> None:
    where = store.Filter.parse("2026-01-31", "2026-02-01T01:00:00+01:00", "user:alice", "tasks")
    assert where == store.Filter("2026-01-31T00:00:00.000000Z", "2026-02-01T00:00:00.000000Z", "user", "alice", "tasks")
    assert store.Filter.parse(actor="k_1:x") == store.Filter(actor_id="k_1:x")
    with pytest.raises(ValidationFailed):
        store.Filter.parse(since="soon")
    with pytest.raises(ValidationFailed):
        export.parse_format("xlsx")

"""KeyStore: API keys are created once, listed without secrets, verified by hash and revoked."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from nanotypedb.auth.keys import KEY_PREFIX, KeyKind, KeyStore
from nanotypedb.errors import BadRequest


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "system.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[KeyStore]:
    keys = KeyStore(db_path)
    yield keys
    keys.close()


def test_create_returns_the_record_and_the_plaintext(store: KeyStore) -> None:
    record, plaintext = store.create("ci", kind="service", environment="prod")

    assert plaintext.startswith(KEY_PREFIX)
    assert len(plaintext) > len(KEY_PREFIX) + 40
    assert re.fullmatch(r"k_[0-9a-f]{8}", record.id)
    assert (record.name, record.kind, record.environment) == ("ci", KeyKind.SERVICE, "prod")
    assert record.last4 == plaintext[-4:]
    assert record.revoked_at is None and record.is_active
    assert record.created_at.endswith("+00:00")


def test_create_defaults_to_an_admin_key_for_dev(store: KeyStore) -> None:
    record, _ = store.create("laptop")

    assert record.kind is KeyKind.ADMIN
    assert record.environment == "dev"


def test_each_key_is_different(store: KeyStore) -> None:
    (first, first_key), (second, second_key) = store.create("a"), store.create("b")

    assert first.id != second.id
    assert first_key != second_key


def test_list_shows_every_key_oldest_first_without_secrets(store: KeyStore) -> None:
    first, first_key = store.create("first")
    second, _ = store.create("second")
    store.revoke(first.id)

    listed = store.list()

    assert [r.id for r in listed] == [first.id, second.id]
    assert listed[0].revoked_at is not None
    assert listed[1] == second
    for record in listed:
        shown = record.to_dict()
        assert set(shown) == {
            "id",
            "name",
            "kind",
            "environment",
            "created_at",
            "revoked_at",
            "last4",
        }
        assert first_key not in repr(shown)


def test_to_dict_is_plain_json_values(store: KeyStore) -> None:
    record, _ = store.create("ci", kind="service")

    shown = record.to_dict()

    assert type(shown["kind"]) is str
    assert shown["kind"] == "service"


def test_verify_returns_the_active_key(store: KeyStore) -> None:
    record, plaintext = store.create("ci")

    assert store.verify(plaintext) == record


def test_verify_refuses_unknown_keys(store: KeyStore) -> None:
    _, plaintext = store.create("ci")

    assert store.verify(plaintext + "x") is None
    assert store.verify(KEY_PREFIX + "nope") is None
    assert store.verify("eyJhbGciOiJIUzI1NiJ9.e30.sig") is None
    assert store.verify("") is None


def test_revoked_keys_fail_verify(store: KeyStore) -> None:
    record, plaintext = store.create("ci")
    other, other_key = store.create("other")

    assert store.revoke(record.id) is True

    assert store.verify(plaintext) is None
    assert store.verify(other_key) == other


def test_revoke_is_false_for_unknown_or_already_revoked_keys(store: KeyStore) -> None:
    record, _ = store.create("ci")

    assert store.revoke("k_00000000") is False
    assert store.revoke(record.id) is True
    assert store.revoke(record.id) is False


def test_count_active_ignores_revoked_keys(store: KeyStore) -> None:
    assert store.count_active() == 0
    first, _ = store.create("a")
    store.create("b")
    store.revoke(first.id)

    assert store.count_active() == 1


def test_the_file_stores_the_sha256_not_the_plaintext(store: KeyStore, db_path: Path) -> None:
    record, plaintext = store.create("ci")

    with closing(sqlite3.connect(db_path)) as conn:
        row = conn.execute("SELECT * FROM _api_keys WHERE id = ?", (record.id,)).fetchone()

    assert hashlib.sha256(plaintext.encode()).hexdigest() in row
    assert all(plaintext not in str(value) for value in row)


def test_the_file_uses_wal(store: KeyStore, db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()

    assert mode == "wal"


def test_keys_created_by_another_store_verify_at_once(store: KeyStore, db_path: Path) -> None:
    # The CLI writes with its own connection while the server keeps its store open.
    cli = KeyStore(db_path)
    try:
        record, plaintext = cli.create("from-cli")
        assert store.verify(plaintext) == record
        cli.revoke(record.id)
        assert store.verify(plaintext) is None
    finally:
        cli.close()


def test_keys_survive_reopening(db_path: Path) -> None:
    first = KeyStore(db_path)
    record, plaintext = first.create("ci")
    first.close()

    second = KeyStore(db_path)
    try:
        assert second.verify(plaintext) == record
    finally:
        second.close()


def test_verify_is_safe_from_many_threads(store: KeyStore) -> None:
    record, plaintext = store.create("ci")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: store.verify(plaintext), range(200)))

    assert results == [record] * 200


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_name_is_a_bad_request(store: KeyStore, name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        store.create(name)

    assert caught.value.code == "BadRequest"
    assert store.count_active() == 0


def test_an_unknown_kind_is_a_bad_request(store: KeyStore) -> None:
    with pytest.raises(BadRequest) as caught:
        store.create("ci", kind="root")

    assert caught.value.code == "BadRequest"


def test_an_empty_environment_is_a_bad_request(store: KeyStore) -> None:
    with pytest.raises(BadRequest):
        store.create("ci", environment="")


def test_listing_counting_and_revoking_are_per_environment(store: KeyStore) -> None:
    dev, _ = store.create("dev-ci")
    staging, _ = store.create("staging-ci", environment="staging")
    assert [k.id for k in store.list("dev")] == [dev.id]
    assert [k.id for k in store.list("staging")] == [staging.id]
    assert [k.id for k in store.list()] == [dev.id, staging.id]
    assert store.revoke(dev.id, "staging") is False  # not a key of staging
    assert store.count_active("dev") == 1
    assert store.revoke(dev.id, "dev") is True
    assert (store.count_active("dev"), store.count_active("staging"), store.count_active()) == (0, 1, 1)


def test_deleting_an_environments_keys_leaves_the_others(store: KeyStore) -> None:
    kept, kept_plain = store.create("dev-ci")
    _, gone_plain = store.create("staging-ci", environment="staging")
    assert store.delete_environment("staging") == 1
    assert store.verify(gone_plain) is None
    verified = store.verify(kept_plain)
    assert verified is not None and verified.id == kept.id

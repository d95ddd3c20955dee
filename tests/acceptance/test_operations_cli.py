"""Operations with real processes: JSON log lines with request ids, and `nanotypedb backup` of a live database."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import httpx
from _proc import Launcher, data, mint_token, rpc, run_cli

WRITERS = 4
ACKS_BEFORE_BACKUP = 30


def test_json_logs_are_one_object_per_line_with_the_request_id(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.serve(tmp_path / "data", "--log-format", "json", "--log-level", "debug")
    alice = server.client(mint_token(tmp_path / "data", "alice"))
    response = rpc(alice, "createTask", title="logged")
    data(response)
    rid = response.headers["x-request-id"]
    assert server.stop() == 0
    records = [json.loads(line) for line in server.output.splitlines() if line.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    mine = [r for r in records if r.get("request_id") == rid]
    assert mine, server.output
    assert any("createTask" in r["message"] for r in mine)
    assert any(r["message"] == "databases closed cleanly" for r in records)
    # Everything else on stderr is the start-up banner (the admin key, the address, the embeddings line).
    others = [line for line in server.output.splitlines() if line.strip() and not line.startswith("{")]
    assert len(others) <= 3, others


def _write_until(stop: threading.Event, client: httpx.Client, acked: list[int], lock: threading.Lock) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        row = data(rpc(client, "createTask", title=f"t{n}"))
        with lock:
            acked.append(int(row["id"]))


def test_backup_of_a_live_database_restores_every_acknowledged_row(launcher: Launcher, tmp_path: Path) -> None:
    source = tmp_path / "data"
    server = launcher.serve(source, "--rate-limit", "100000/s")
    token = mint_token(source, "alice")
    acked: list[int] = []
    lock, stop = threading.Lock(), threading.Event()
    writers = [
        threading.Thread(target=_write_until, args=(stop, server.client(token), acked, lock)) for _ in range(WRITERS)
    ]
    for w in writers:
        w.start()
    try:
        while len(acked) < ACKS_BEFORE_BACKUP:
            threading.Event().wait(0.01)
        with lock:
            before = set(acked)
        result = run_cli("backup", "--out", tmp_path / "backup", "--data-dir", source)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "backup")
    copy = tmp_path / "backup" / "env" / "dev" / "db.sqlite3"
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        saved = {int(r[0]) for r in conn.execute("SELECT id FROM tasks")}
    finally:
        conn.close()
    assert before <= saved
    assert (tmp_path / "backup" / "system.sqlite3").is_file()
    assert (tmp_path / "backup" / "env" / "dev" / "analytics.sqlite3").is_file()
    assert (tmp_path / "backup" / "secret").stat().st_mode & 0o077 == 0
    admin_key = server.admin_key
    assert server.stop() == 0

    # Restore: the server is stopped; the backup's files become a data directory.
    restored = tmp_path / "restored"
    shutil.copytree(tmp_path / "backup", restored)
    again = launcher.serve(restored)
    # The secret came along (alice's token still works), and so did the keys (the admin key too).
    assert data(rpc(again.client(token), "countTasks")) == len(saved)
    assert data(rpc(again.client(token), "getTask", id=max(before)))["id"] == max(before)
    assert httpx.get(f"{again.url}/readyz", timeout=5).json()["status"] == "ready"
    assert rpc(again.client(admin_key), "listJobs").status_code == 200


def test_backup_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("backup", "--out", out, "--data-dir", tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert (out / "keep.txt").read_text() == "mine"


def test_backup_of_a_missing_data_directory_says_so(tmp_path: Path) -> None:
    result = run_cli("backup", "--out", tmp_path / "out", "--data-dir", tmp_path / "nowhere")
    assert result.returncode == 2
    assert "--data-dir" in result.stderr
    assert not (tmp_path / "out").exists()

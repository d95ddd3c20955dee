"""A server process's life: graceful shutdown on SIGTERM/SIGINT and crashes lose no acknowledged write."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from _proc import Launcher, ServerProcess, data, mint_token, rpc

WRITERS = 20
ACKS_BEFORE_SIGNAL = 40
SLOW_CALLS = 10

SLOW_APP = """
import asyncio
from typing import Any

from nanotypedb import App, Ctx, Table

app = App("notes")
started = 0


@app.table
class Note(Table, table="notes"):
    text: str


@app.mutation(name="addNote")
def add_note(ctx: Ctx, text: str) -> dict[str, Any]:
    return ctx.db.insert("notes", {"text": text})


@app.action(name="slowAddNote")
async def slow_add_note(ctx: Ctx, text: str) -> dict[str, Any]:
    global started
    started += 1
    await asyncio.sleep(1.0)
    return await ctx.run_mutation("addNote", text=text)


@app.query(name="startedCalls")
def started_calls(ctx: Ctx) -> int:
    return started


@app.query(name="listNotes")
def list_notes(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.db.query("notes").limit(1000).all()
"""


class Writers:
    """`WRITERS` threads that each create tasks over HTTP, one after another, until a call fails."""

    def __init__(self, url: str, credential: str) -> None:
        self.url, self.credential = url, credential
        self.acked: list[int] = []  # ids of tasks whose createTask returned 200
        self.refusals: list[int] = []  # HTTP statuses other than 200
        self.threads = [threading.Thread(target=self._write, args=(i,)) for i in range(WRITERS)]

    def start(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def wait_for_acks(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.acked) >= count, f"only {len(self.acked)} calls succeeded"

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=10)
        assert not any(t.is_alive() for t in self.threads)

    def _write(self, writer: int) -> None:
        headers = {"authorization": f"Bearer {self.credential}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            for n in range(10_000):
                try:
                    response = rpc(client, "createTask", title=f"writer {writer} task {n}")
                except httpx.TransportError:
                    return  # the server stopped accepting
                if response.status_code != 200:
                    self.refusals.append(response.status_code)
                    return
                self.acked.append(response.json()["data"]["id"])


def all_task_ids(server: ServerProcess, admin_key: str) -> set[int]:
    admin = server.client(admin_key)
    count = data(rpc(admin, "countTasks"))
    ids: set[int] = set()
    cursor = None
    while True:
        page = data(rpc(admin, "listTasksPage", limit=1000, cursor=cursor))
        ids |= {row["id"] for row in page["items"]}
        if page["is_done"]:
            break
        cursor = page["cursor"]
    assert len(ids) == count
    return ids


def wal_files(data_dir: Path) -> dict[str, int]:
    """Every non-empty SQLite write-ahead log under `data_dir`, with its size."""
    return {str(p.relative_to(data_dir)): p.stat().st_size for p in data_dir.rglob("*-wal") if p.stat().st_size}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_in_flight_calls_and_closes_cleanly(
    launcher: Launcher, tmp_path: Path, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir)
    admin_key = server.admin_key
    writers = Writers(server.url, mint_token(data_dir, "alice")).start()
    writers.wait_for_acks(ACKS_BEFORE_SIGNAL)
    started = time.monotonic()
    assert server.stop(sig) == 0, server.output
    writers.join()
    assert time.monotonic() - started < 5
    assert wal_files(data_dir) == {}
    assert set(writers.refusals) <= {503}
    restarted = launcher.serve(data_dir)
    assert set(writers.acked) <= all_task_ids(restarted, admin_key)


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_kill_9_loses_no_acknowledged_write(launcher: Launcher, tmp_path: Path, durability: str) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir, "--durability", durability)
    admin_key = server.admin_key
    alice = server.client(mint_token(data_dir, "alice"))
    acked = {data(rpc(alice, "createTask", title=f"task {n}"))["id"] for n in range(30)}
    server.kill()
    restarted = launcher.serve(data_dir, "--durability", durability)
    assert all_task_ids(restarted, admin_key) == acked


def test_restart_keeps_updates_and_deletes(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir)
    alice = server.client(mint_token(data_dir, "alice"))
    kept, gone = (data(rpc(alice, "createTask", title=t)) for t in ("keep", "drop"))
    data(rpc(alice, "completeTask", id=kept["id"]))
    data(rpc(alice, "deleteTask", id=gone["id"]))
    assert server.stop() == 0
    after = launcher.serve(data_dir).client(mint_token(data_dir, "alice"))
    rows = data(rpc(after, "listTasks"))
    assert [(r["id"], r["status"]) for r in rows] == [(kept["id"], "completed")]


def test_sigterm_waits_for_calls_already_running(launcher: Launcher, tmp_path: Path) -> None:
    app_file, data_dir = tmp_path / "notes.py", tmp_path / "data"
    app_file.write_text(SLOW_APP)
    server = launcher.serve(data_dir, "--app", str(app_file))
    admin = server.client(server.admin_key)
    statuses: list[int] = []
    calls = [
        threading.Thread(target=lambda n=n: statuses.append(rpc(admin, "slowAddNote", text=f"note {n}").status_code))
        for n in range(SLOW_CALLS)
    ]
    for call in calls:
        call.start()
    deadline = time.monotonic() + 10
    while data(rpc(admin, "startedCalls")) < SLOW_CALLS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stop() == 0, server.output  # each call is still asleep inside the action
    for call in calls:
        call.join(timeout=10)
    assert statuses == [200] * SLOW_CALLS
    restarted = launcher.serve(data_dir, "--app", str(app_file))
    notes = data(rpc(restarted.client(server.admin_key), "listNotes"))
    assert sorted(n["text"] for n in notes) == sorted(f"note {n}" for n in range(SLOW_CALLS))

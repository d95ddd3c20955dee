"""Run `nanotypedb` as a real subprocess: CLI commands, and servers on free ports that are always stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from nanotypedb.testing import free_port

KEY_LINE = re.compile(r"Admin API key \(shown once\): (ntdb_\S+)")
STARTUP_TIMEOUT = 15.0
# Generous, so that a busy CI machine is not mistaken for a hung shutdown.
EXIT_TIMEOUT = 10.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any NANOTYPEDB_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOTYPEDB_")}
    return {**env, **extra}


MODULE = (sys.executable, "-m", "nanotypedb")
SCRIPT = (str(Path(sys.executable).parent / "nanotypedb"),)  # the installed console script


def command(*args: str, program: tuple[str, ...] = MODULE) -> list[str]:
    return [*program, *args]


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one `nanotypedb` command to completion (a server that never exits fails the test on timeout)."""
    argv = command(*map(str, args))
    return subprocess.run(
        argv, capture_output=True, text=True, env=env or clean_env(), cwd=cwd, timeout=30, check=False
    )


def mint_token(data_dir: Path, user: str) -> str:
    result = run_cli("token", "--user", user, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def rpc(client: httpx.Client, name: str, **args: Any) -> httpx.Response:
    return client.post(f"/api/rpc/{name}", json=args)


def data(response: httpx.Response) -> Any:
    """The result of a successful call; fails the test with the error body otherwise."""
    assert response.status_code == 200, response.text
    return response.json()["data"]


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


class ServerProcess:
    """One `nanotypedb serve` process; stdout and stderr both go to `log`."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.clients: list[httpx.Client] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.log.read_text()

    @property
    def admin_key(self) -> str:
        """The key printed at first start."""
        keys = KEY_LINE.findall(self.output)
        assert len(keys) == 1, self.output
        return str(keys[0])

    def client(self, credential: str | None = None) -> httpx.Client:
        """An HTTP client calling as `credential`; closed when the test ends."""
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=10)
        self.clients.append(client)
        return client

    def wait_healthy(self) -> ServerProcess:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}:\n{self.output}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"the server did not answer /healthz:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` and wait for the exit; returns the exit code."""
        self.proc.send_signal(sig)
        return self.wait()

    def wait(self) -> int:
        return self.proc.wait(timeout=EXIT_TIMEOUT)

    def kill(self) -> None:
        """kill -9: no chance to close anything."""
        self.proc.kill()
        self.proc.wait(timeout=EXIT_TIMEOUT)

    def cleanup(self) -> None:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.kill()


class Launcher:
    """Starts servers for one test and makes sure that none outlives it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[ServerProcess] = []

    def serve(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> ServerProcess:
        """`nanotypedb serve --data-dir DATA --port <free port> EXTRA…`, healthy."""
        port = free_port()
        args = ["serve", "--data-dir", str(data_dir), "--port", str(port), *extra]
        return self.spawn(args, port, env=env).wait_healthy()

    def spawn(
        self,
        args: list[str],
        port: int,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        program: tuple[str, ...] = MODULE,
    ) -> ServerProcess:
        """Start `nanotypedb ARGS…` in the background without waiting for it."""
        log = self.workdir / f"server-{len(self.servers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command(*args, program=program),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env or clean_env(),
                cwd=cwd or self.workdir,
            )
        server = ServerProcess(proc, port, log)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.cleanup()

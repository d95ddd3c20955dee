"""Shared fixtures: a running bundled tasks app on 127.0.0.1 with a fresh data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.testing import TestServer, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestServer]:
    with serve(tasks_app, tmp_path / "data") as running:
        yield running

"""Shared fixtures: a running bundled tasks app on 127.0.0.1 with a fresh data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.testing import TestServer, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestServer]:
    with serve(tasks_app, tmp_path / "data") as running:
        yield running


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA key for every test that signs RS256 tokens (generating one takes a while)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    """Two P-256 keys by kid, for ES256 tokens and JWKS files."""
    return {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("k1", "k2")}

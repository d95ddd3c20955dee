"""`audit verify`: the report on every chain of a data directory, the same for the CLI and verifyAuditLog."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..storage.audit_verify import verify_file


def verify_chains(chains: Iterable[tuple[str, Path]]) -> dict[str, Any]:
    """`{"ok", "chains": [report, …]}` for the chains named (`system`, `env:<name>`) and their files."""
    reports = [verify_file(path, name).to_dict() for name, path in chains]
    return {"ok": all(r["ok"] for r in reports), "chains": reports}


def describe(report: dict[str, Any]) -> list[str]:
    """The report as lines for a terminal: one per chain, one per problem."""
    lines = []
    for chain in report["chains"]:
        state = "intact" if chain["ok"] else "TAMPERED"
        head = chain["head"]
        lines.append(f"{chain['chain']}: {state}, {chain['entries']} entries, head {head['seq']} {head['hash']}")
        lines += [f"  {p['kind']} at seq {p['seq']}: {p['message']}" for p in chain["problems"]]
        if chain["more_problems"]:
            lines.append(f"  … and {chain['more_problems']} more problems")
    return lines

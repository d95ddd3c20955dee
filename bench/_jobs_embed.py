"""PLACEHOLDER: embeddings per second with the local model, cold (the model computes) and from the cache.

To fill in: `nanotypedb.ai.gateway.AIGateway(path, embedders).embed(provider, texts)` with
the local provider, once on texts it has never seen (cold), then on the same texts again
(every one a cache hit); time each pass and divide the number of texts by it.
"""

from __future__ import annotations

from pathlib import Path

from _jobs_report import Line, not_measured

MEASUREMENT = "embeddings"
CASES = {False: "local model, cold", True: "local model, from the cache"}


def embeddings_per_second(workdir: Path, cached: bool) -> float | None:
    """Texts embedded per second, or None while the gateway is not there to measure."""
    print(f"embeddings per second ({CASES[cached]}): not measured yet (the AI gateway has not landed)")
    return None


def measure(workdir: Path) -> list[Line]:
    lines = []
    for cached, case in CASES.items():
        rate = embeddings_per_second(workdir, cached)
        lines.append(not_measured(MEASUREMENT, case) if rate is None else Line(MEASUREMENT, case, per_s=rate))
    return lines

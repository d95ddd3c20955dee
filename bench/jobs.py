"""Jobs benchmark: the queue, embeddings and vector search (issue 4), in one process, in one run.

`make bench` runs it (`python bench/jobs.py --help` for its options); it prints a table and
writes bench/results/jobs.json. bench/README.md says what each figure and target means.
The queue (bench/_jobs_queue.py) and the end-to-end embedding figure run real servers as
subprocesses; the gateway's embeddings (bench/_jobs_embed.py) and vector search run in this
process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import _jobs_embed
import _jobs_queue
import _jobs_vectors
from _jobs_report import Line, Target, render, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "jobs.json"
P99_TARGET_MS = 20.0
JOBS_TARGET_PER_S = 1000.0
DEFAULTS = "full, 4 workers"  # the server's defaults: the no-op targets read these lines


def find(lines: Sequence[Line], measurement: str, *case_parts: str) -> Line | None:
    for line in lines:
        if line.measurement == measurement and all(part in line.case for part in case_parts):
            return line
    return None


def targets(lines: Sequence[Line], largest: int) -> list[Target]:
    size = f"{largest:,} x"
    plain = find(lines, _jobs_vectors.SEARCH, size, "no filter")
    rls = find(lines, _jobs_vectors.SEARCH, size, "RLS", "half")
    stream = find(lines, _jobs_queue.MEASUREMENT, "stream", DEFAULTS)
    burst = find(lines, _jobs_queue.MEASUREMENT, "burst", DEFAULTS)
    backlog = max(_jobs_queue.Settings().burst)
    return [
        Target(f"vector search p99, {largest:,} vectors", plain and plain.p99_ms, P99_TARGET_MS, "ms", lower=True),
        Target(
            f"vector search p99, {largest:,}, under RLS (half)", rls and rls.p99_ms, P99_TARGET_MS, "ms", lower=True
        ),
        Target(f"no-op jobs, 1 per mutation, {DEFAULTS}", stream and stream.per_s, JOBS_TARGET_PER_S, "/s"),
        Target(f"no-op jobs, {backlog:,} in 1 mutation, {DEFAULTS}", burst and burst.per_s, JOBS_TARGET_PER_S, "/s"),
    ]


def guarded(failures: list[str], label: str, step: Callable[[], list[Line]]) -> list[Line]:
    """Run one part; if it breaks, record why and go on with the next."""
    try:
        return step()
    except Exception as exc:
        failures.append(f"{label}: {type(exc).__name__}: {exc}")
        print(f"! {failures[-1]}", file=sys.stderr)
        return []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="vector counts, comma-separated (10000,100000)")
    parser.add_argument("--dims", type=int, default=384, help="vector size (384)")
    parser.add_argument("-k", type=int, default=10, help="results per search (10)")
    parser.add_argument("--queries", type=int, default=400, help="measured searches per scenario at the largest size")
    parser.add_argument("--warmup", type=int, default=10, help="searches discarded before each scenario (10)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    parser.add_argument("--tmp", type=Path, default=None, help="where data files go (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = tuple(sorted(int(s) for s in args.sizes.split(",")))
    settings = _jobs_vectors.Settings(sizes, args.dims, args.k, args.queries, args.warmup)
    load = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="ntdb-bench-jobs-", dir=args.tmp))
    print(f"data in {workdir}", file=sys.stderr)
    failures: list[str] = []
    try:
        lines = [
            *guarded(failures, "queue", lambda: _jobs_queue.measure(workdir)),
            *guarded(failures, "embeddings", lambda: _jobs_embed.measure(workdir)),
            *guarded(failures, "vectors", lambda: _jobs_vectors.measure(workdir, settings)),
        ]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    goals = targets(lines, max(sizes))
    print(render(lines, goals, failures))
    settings_json = {
        "sizes": list(sizes),
        "dims": args.dims,
        "k": args.k,
        "queries": args.queries,
        "warmup": args.warmup,
    }
    # The machines are shared: the load before and after says how far the figures can be trusted.
    notes = {"load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}
    write_json(args.out, lines, goals, failures, settings_json, notes)
    print(f"\nwrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

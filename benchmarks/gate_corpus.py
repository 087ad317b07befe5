"""Score the regression gate on the growth corpus (tests/corpus/growth_suite.py).

For each mode (default, --memguard-trace) and each way of running (serial, -n 2):
record a baseline from v1, compare v2 against it, and compare v1 against its own
baseline several times. Prints recall on the regressions the targets name and
every false alarm.

    python benchmarks/gate_corpus.py [--reruns 5] [--no-xdist]

Targets (issue "YAML baselines and the CI regression gate"): every regression of
>= 20% or >= 1 MiB caught in default mode, every >= 5% caught with tracing (Python
memory: tracemalloc cannot see raw malloc), zero false alarms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "corpus" / "growth_suite.py"
CHANGE = re.compile(r"test_regress\[(?P<change>[^-]+)-(?P<figure>[^-]+)-(?P<kind>[^\]]+)\]")


def run(version: str, workdir: Path, *args: str) -> dict[str, str]:
    """Run the corpus; return {test name: verdict}."""
    results = workdir / "results.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "--memguard",
        "--memguard-leaks=off",
        f"--memguard-baseline={workdir / 'baseline.yaml'}",
        f"--memguard-json={results}",
        str(SUITE),
        *args,
    ]
    env = {**os.environ, "MEMGUARD_CORPUS": version}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1) or not results.exists():
        sys.exit(f"corpus run failed ({done.returncode}): {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    tests = json.loads(results.read_text())["tests"]
    return {nodeid.split("::", 1)[1]: entry["verdict"] for nodeid, entry in tests.items()}


def expected(name: str, trace: bool) -> bool:
    """Must the gate catch this test's v2 change?"""
    match = CHANGE.fullmatch(name)
    if match is None:
        return False
    if match["change"] != "x1.05":
        return True
    return trace and match["kind"] == "python"


def score(mode_args: list[str], trace: bool, reruns: int) -> str:
    with tempfile.TemporaryDirectory(prefix="memguard-corpus-") as tmp:
        workdir = Path(tmp)
        run("v1", workdir, "--memguard-update-baseline", *mode_args)
        v2 = run("v2", workdir, *mode_args)
        should = {name for name in v2 if expected(name, trace)}
        caught = {name for name, verdict in v2.items() if verdict == "regression"}
        optional = {name for name in v2 if CHANGE.fullmatch(name)} - should
        false_v2 = sorted(caught - should - optional)
        false_v1: list[str] = []
        for _ in range(reruns):
            v1 = run("v1", workdir, *mode_args)
            false_v1 += [name for name, verdict in v1.items() if verdict == "regression"]
    missed = sorted(should - caught)
    extra = sorted(caught & optional)
    lines = [
        f"  recall {len(should & caught)}/{len(should)} = {len(should & caught) / len(should):.2f}"
        f"   false alarms: v2 {len(false_v2)}, v1 x{reruns} {len(false_v1)}"
        f"   (also caught beyond target: {len(extra)}/{len(optional)})"
    ]
    lines += [f"    missed: {name}" for name in missed]
    lines += [f"    false alarm: {name}" for name in false_v2 + false_v1]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reruns", type=int, default=5, help="runs of v1 against its own baseline (default 5)")
    parser.add_argument("--no-xdist", action="store_true", help="skip the -n 2 runs")
    options = parser.parse_args()
    ways: list[tuple[str, list[str]]] = [("serial", [])]
    if not options.no_xdist:
        ways.append(("-n 2", ["-n", "2"]))
    print(f"growth corpus: {SUITE.relative_to(ROOT)}; Python {sys.version.split()[0]}")
    for trace in (False, True):
        for way, args in ways:
            mode = ["--memguard-trace"] if trace else []
            print(f"{'--memguard-trace' if trace else 'default'} / {way}:")
            print(score([*mode, *args], trace, options.reruns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

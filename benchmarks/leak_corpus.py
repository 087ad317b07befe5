"""Score the leak detector on the leak corpus (tests/corpus/leak_suite.py).

    python benchmarks/leak_corpus.py [--repeats 3] [--no-xdist] [--screening-args ...]

Runs the corpus with --memguard (serial, then -n 2; plain, then --memguard-trace),
``--repeats`` times each, and prints precision and recall of the ``leak`` verdict:
``test_leak_*`` must be caught, ``test_clean_*`` must not. Targets (issue "Leak detector
that users can trust"): recall >= 0.95, precision 1.0, stable across runs and with -n 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "corpus" / "leak_suite.py"


def run(args: list[str]) -> tuple[dict[str, str], float]:
    with tempfile.TemporaryDirectory(prefix="memguard-leaks-") as tmp:
        results = Path(tmp) / "results.json"
        command = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--memguard", "--memguard-leaks=warn", f"--memguard-json={results}", str(SUITE), *args,
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False, env=dict(os.environ))
        elapsed = time.perf_counter() - started
        if done.returncode != 0 or not results.exists():
            sys.exit(f"corpus run failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}")
        tests = json.loads(results.read_text())["tests"]
    return {nodeid.split("::")[-1]: entry["verdict"] for nodeid, entry in tests.items()}, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-xdist", action="store_true")
    options = parser.parse_args()
    ways: list[tuple[str, list[str]]] = [("default", []), ("--memguard-trace", ["--memguard-trace"])]
    if not options.no_xdist:
        ways += [("default -n 2", ["-n", "2"]), ("--memguard-trace -n 2", ["--memguard-trace", "-n", "2"])]
    print(f"leak corpus: {SUITE.relative_to(ROOT)}; Python {sys.version.split()[0]}")
    outcomes: set[tuple[tuple[str, str], ...]] = set()
    for label, args in ways:
        for repeat in range(1, options.repeats + 1):
            verdicts, elapsed = run(args)
            leaks = {name for name in verdicts if name.startswith("test_leak_")}
            clean = {name for name in verdicts if name.startswith("test_clean_")}
            flagged = {name for name, verdict in verdicts.items() if verdict == "leak"}
            caught, false = flagged & leaks, flagged & clean
            precision = len(caught) / len(flagged) if flagged else 1.0
            print(
                f"{label:24} run {repeat}: recall {len(caught)}/{len(leaks)} = {len(caught) / len(leaks):.2f}, "
                f"precision {precision:.2f} ({len(false)} false alarms of {len(clean)} clean cases) in {elapsed:.1f}s"
            )
            for name in sorted(leaks - caught):
                print(f"    missed: {name}")
            for name in sorted(false):
                print(f"    false alarm: {name}")
            outcomes.add(tuple(sorted((name, verdicts[name]) for name in leaks | clean)))
    print(f"identical verdicts across all runs: {'yes' if len(outcomes) == 1 else f'no ({len(outcomes)} variants)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

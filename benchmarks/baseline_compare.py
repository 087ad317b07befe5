"""How long the gate takes on a large suite: load, compare and dump a 50,000-test baseline.

    python benchmarks/baseline_compare.py [--tests 50000]

Prints the median of 5 timings for each step. Target: comparing well under a second.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

from pytest_memguard.baseline import Baseline, compare_figures, dump_baseline, load_baseline
from pytest_memguard.tolerance import default_policy


def timed(step: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=50_000)
    count = parser.parse_args().tests
    rng = random.Random(0)
    tests = {
        f"tests/module_{i // 100:04d}/test_file.py::TestClass::test_case[{i}]": {
            "rss_peak": rng.randrange(1 << 24),
            "rss_retained": rng.randrange(1 << 16),
            "heap_peak": rng.randrange(1 << 22),
            "heap_retained": rng.randrange(1 << 12),
        }
        for i in range(count)
    }
    baseline = Baseline(tests=tests, environment={"python": "3.11"})
    current = {
        nodeid: {k: int(v * rng.uniform(0.9, 1.3)) for k, v in figures.items()} for nodeid, figures in tests.items()
    }
    policy = default_policy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline.yaml"
        text = dump_baseline(baseline)
        path.write_text(text)

        def compare() -> int:
            return sum(
                len(compare_figures(nodeid, baseline.tests[nodeid], figures, policy.for_test(nodeid)))
                for nodeid, figures in current.items()
            )

        print(
            f"{count} tests, baseline {len(text) / 1e6:.1f} MB of YAML; Python {sys.version.split()[0]}, "
            f"libyaml {'yes' if getattr(yaml, '__with_libyaml__', False) else 'no'}"
        )
        print(f"  compare every test: {timed(compare) * 1000:8.1f} ms  ({compare()} findings)")
        print(f"  load + validate:    {timed(lambda: load_baseline(path), 3) * 1000:8.1f} ms")
        print(f"  dump:               {timed(lambda: dump_baseline(baseline), 3) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

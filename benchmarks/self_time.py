"""The plugin's own time inside a run of a real suite: a low-noise companion to ``overhead.py``.

    python benchmarks/self_time.py                         # more-itertools, --memguard, 5 runs
    python benchmarks/self_time.py --runs 10 -- --memguard-leaks=off

On a shared machine the wall time of whole runs swings by ±20%, so ``overhead.py`` needs many
rounds to tell a 1-point change. This script instead times, inside each run, what the plugin
itself does: its ``pytest_runtest_protocol`` minus the pytest protocol it calls and the logging
hooks pytest would call anyway (timed where they are called, through ``Session.gethookproxy``),
plus its setup and logreport hooks and its C heap readings around each call phase. That and the
run's own time slow down together when the machine is busy, so their ratio is steadier. It
leaves out what a timer cannot see (pluggy calling the plugin's other hooks, cache effects),
and pytest without the plugin gets a new hook proxy for each report where the plugin reuses
one, so it is an estimate of the overhead, not the overhead.

The suite is fetched and run as ``overhead.py`` does; each run is a fresh subprocess. The timers
wrap private names of pytest_memguard (``session.runtestprotocol``, ``session.confirm_leak``,
``MemguardSession``'s hooks, ``Tracker.malloc_in_use``) and pytest's ``Session.gethookproxy``:
if one is renamed, this script says which one is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from overhead import MODES, PINNED, UNSET, command, resolve  # noqa: E402

PYTEST_MODULE = (sys.executable, "-m", "pytest")  # what the driver replaces; the arguments stay

# Runs inside the pytest process: wraps the plugin's methods with timers, runs pytest.main, and
# writes the sums as JSON to the path in MEMGUARD_SELF_TIME.
DRIVER = r"""
import functools, json, os, sys, time
import pytest
from pytest_memguard import session as S, tracker as T

clock = time.perf_counter
acc = {"protocol": 0.0, "pytest_protocol": 0.0, "logging": 0.0, "hooks": 0.0, "call_malloc": 0.0,
       "leak_checks": 0.0, "analyses": 0.0, "tests": 0}
inside = [False]  # within the pytest protocol the plugin calls for a test's own run
checking = [False]  # within a suspect's leak check (counted whole, as leak_checks)

def need(owner, name):
    if not hasattr(owner, name):
        sys.exit(f"self_time.py: pytest_memguard has no {getattr(owner, '__name__', owner)}.{name} any more")
    return getattr(owner, name)

def timed_within(key, flag, function):
    # function, timed into acc[key], with flag[0] set while it runs
    def timed(*args, **kwargs):
        started, flag[0] = clock(), True
        try:
            return function(*args, **kwargs)
        finally:
            acc[key] += clock() - started
            flag[0] = False
    return timed

S.runtestprotocol = timed_within("pytest_protocol", inside, need(S, "runtestprotocol"))
S.confirm_leak = timed_within("leak_checks", checking, need(S, "confirm_leak"))
S.analyse_flagged = timed_within("analyses", checking, need(S, "analyse_flagged"))  # its re-run's hooks: once

def timing(key, method):
    @functools.wraps(method)  # pluggy reads the hook's argument names through __wrapped__
    def timed(*args, **kwargs):
        started = clock()
        try:
            return method(*args, **kwargs)
        finally:
            if not checking[0]:  # the hooks of a check's re-runs are in its time already
                acc[key] += clock() - started
    return timed

Session = S.MemguardSession
protocol = need(Session, "pytest_runtest_protocol")
if os.environ.get("MEMGUARD_SELF_TIME_FLOOR"):  # --floor: the same calls, no measuring or judging
    def protocol(self, item, nextitem):
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reports = S.runtestprotocol(item, nextitem=nextitem, log=False)
        for report in reports:
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

def timed_protocol(self, item, nextitem):
    item.location  # cached on first use, ~0.1 ms: pytest's own protocol asks for it too
    started = clock()
    result = protocol(self, item, nextitem)
    acc["protocol"] += clock() - started
    acc["tests"] += result is not None
    return result
Session.pytest_runtest_protocol = timed_protocol
Session.pytest_runtest_setup = timing("hooks", need(Session, "pytest_runtest_setup"))
Session.pytest_runtest_logreport = timing("hooks", need(Session, "pytest_runtest_logreport"))

malloc_in_use = need(T.Tracker, "malloc_in_use")
def timed_malloc(self):
    started = clock()
    try:
        return malloc_in_use(self)
    finally:
        if inside[0]:  # around the call phase, within the pytest protocol
            acc["call_malloc"] += clock() - started
T.Tracker.malloc_in_use = timed_malloc

# pytest's logging hooks, which the plugin calls itself but which run without it too. Timed where
# they are called: most of their cost is in getting the hook (item.ihook builds a proxy that
# leaves out conftests not in the test's path), before any hook wrapper runs.
class TimedHooks:
    def __init__(self, proxy):
        self._proxy = proxy

    def __getattr__(self, name):
        hook = getattr(self._proxy, name)
        if not name.startswith("pytest_runtest_log"):
            return hook

        def timed(**kwargs):
            started = clock()
            try:
                return hook(**kwargs)
            finally:
                if not inside[0]:  # within pytest's protocol (subtests' reports) it is left out already
                    acc["logging"] += clock() - started

        return timed


gethookproxy = need(pytest.Session, "gethookproxy")
pytest.Session.gethookproxy = lambda self, fspath: TimedHooks(gethookproxy(self, fspath))

started = clock()
code = pytest.main(sys.argv[1:])
acc["run"] = clock() - started
acc["exit"] = int(code)
with open(os.environ["MEMGUARD_SELF_TIME"], "w") as out:
    json.dump(acc, out)
"""


def one_run(cmd: Sequence[str], cwd: Optional[Path], env: Dict[str, str]) -> Dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="memguard-self-time-") as tmp:
        out = Path(tmp) / "times.json"
        argv = [sys.executable, "-c", DRIVER, *cmd[len(PYTEST_MODULE) :]]
        done = subprocess.run(
            argv, cwd=cwd, env={**env, "MEMGUARD_SELF_TIME": str(out)}, capture_output=True, text=True
        )
        if done.returncode != 0 or not out.exists():
            sys.exit(f"error: run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        times: Dict[str, float] = json.loads(out.read_text())
        if times["exit"] not in (0, 1) or not times["tests"]:  # 1: some test failed; the figures still stand
            sys.exit(f"error: pytest exited {times['exit']} after {times['tests']} tests:\n{done.stdout[-3000:]}")
        return times


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="more-itertools", help=f"{', '.join(PINNED)}, self, or a path")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time runs whose protocol measures and judges nothing: what the timers and the plugin's other "
        "hooks come to",
    )
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    suite = resolve(args.suite)
    env = {key: value for key, value in os.environ.items() if key not in UNSET}
    env.update({"PYTHONHASHSEED": "0", **suite.env})
    cmd = command(suite, (*MODES["memguard"], *args.extra))
    print("$ cd", suite.cwd or Path.cwd(), "&& python -c DRIVER", shlex.join(cmd[len(PYTEST_MODULE) :]), flush=True)
    shares: List[float] = []
    check_shares: List[float] = []
    floors: List[float] = []
    kinds = [("run", env)] + ([("floor run", {**env, "MEMGUARD_SELF_TIME_FLOOR": "1"})] if args.floor else [])
    for run in range(1, args.runs + 1):
        for kind, run_env in kinds:  # alternating, so both see the machine in the same mood
            t = one_run(cmd, suite.cwd, run_env)
            own = t["protocol"] - t["pytest_protocol"] - t["logging"] + t["hooks"] + t["call_malloc"]
            without = t["run"] - own
            (floors if kind == "floor run" else shares).append(own / without)
            if kind == "run":
                check_shares.append(t["leak_checks"] / without)
            per_test = (own - t["leak_checks"]) / max(1, t["tests"]) * 1e6
            print(
                f"{kind} {run}/{args.runs}: {t['run']:.2f} s, {int(t['tests'])} tests; memguard's own time"
                f" {own * 1e3:.1f} ms = {own / without:+.2%} (leak checks {t['leak_checks'] * 1e3:.1f} ms; per test"
                f" otherwise {per_test:.0f} µs, of which {t['call_malloc'] / max(1, t['tests']) * 1e6:.0f} µs around"
                " the call)",
                flush=True,
            )
    print(
        f"{suite.name}: memguard's own time, median of {args.runs} runs: {statistics.median(shares):+.2%} of the run "
        f"without it (leak checks {statistics.median(check_shares):+.2%}); an estimate, not the overhead"
    )
    if floors:
        print(
            f"{suite.name}: floor, median of {args.runs} runs whose protocol measures and judges nothing:"
            f" {statistics.median(floors):+.2%} (the timers themselves and the plugin's other hooks)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

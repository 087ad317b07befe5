"""Wall-clock overhead of ``pytest --memguard`` on a real test suite.

Each round runs the suite once plain and once per measured mode, every run in a fresh subprocess, in the same order
(A B A B ...); with ``--together``, each mode at the same moment as a plain run of its own. The figure reported per
mode is the median of the per-round ratios mode/plain, with a 95% confidence interval for that median.

    python benchmarks/overhead.py                          # more-itertools (pinned sdist), --memguard, 10 rounds
    python benchmarks/overhead.py --mode memguard --mode trace --rounds 20
    python benchmarks/overhead.py --together --rounds 100     # steadier ratios; needs two free cores
    python benchmarks/overhead.py --suite attrs            # attrs (pinned sdist) with hypothesis
    python benchmarks/overhead.py --suite self             # this repository's tests/
    python benchmarks/overhead.py --suite path/to/tests    # any directory

Third-party suites are fetched with ``pip download --no-binary :all:`` (the sdist, which ships the tests) into
``benchmarks/.work/`` on first use, and installed with ``pip install --target`` into a folder put on PYTHONPATH, so
the interpreter's own site-packages are left alone. Standard library only (pip runs as a subprocess).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
REPO = HERE.parent
PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "-q")
MODES: Dict[str, Tuple[str, ...]] = {
    # Leaks are checked as by default, but a leak found (the tool working) must not stop the benchmark:
    # warn costs the same as fail.
    "memguard": ("--memguard", "--memguard-leaks=warn"),  # measuring, limits and leak screening
    "noleaks": ("--memguard", "--memguard-leaks=off"),
    "trace": ("--memguard", "--memguard-trace", "--memguard-leaks=warn"),
    "traceonly": ("--memguard", "--memguard-trace", "--memguard-leaks=off"),  # tracing without leak checks
    "xtracemalloc": (),  # no plugin flags, but tracemalloc on from the start: tracemalloc's own cost
    "unloaded": ("-p", "no:memguard"),  # the plugin not even loaded: what "installed but off" costs, inverted
}
MODE_ENV: Dict[str, Dict[str, str]] = {"xtracemalloc": {"PYTHONTRACEMALLOC": "1"}}  # = python -X tracemalloc=1
# Unset for the runs: PYTEST_ADDOPTS would change what runs; without bytecode caches every run recompiles.
UNSET = ("PYTEST_ADDOPTS", "PYTHONDONTWRITEBYTECODE")
CONFIGS = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")  # pytest's own search order
OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed", "errors")


@dataclass(frozen=True)
class Suite:
    name: str
    version: str = ""  # pinned PyPI version; empty for a local directory
    module: str = ""  # imported once to show which copy the tests get
    deps: Tuple[str, ...] = ()  # pinned test dependencies, installed beside the package
    args: Tuple[str, ...] = ()  # extra pytest arguments this suite needs
    tests: str = "tests"
    cwd: Optional[Path] = None
    env: Dict[str, str] = field(default_factory=dict)


PINNED = {
    "more-itertools": Suite("more-itertools", "10.5.0", "more_itertools"),
    "attrs": Suite(
        "attrs",
        "25.3.0",
        "attr",
        deps=("hypothesis==6.130.0", "sortedcontainers==2.4.0"),
        # Fails without any plugin on CPython 3.11.7 (inspect.signature of a slotted __call__), not ours to judge.
        args=("--hypothesis-seed=0", "--deselect", "tests/test_converters.py::TestPipe::test_wrapped_annotation"),
    ),
}


def run_quiet(cmd: Sequence[str]) -> None:
    """Run a setup command, print it, and show its output only if it fails."""
    print("$", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: command failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def fetch(suite: Suite) -> Suite:
    """Download, unpack and install the pinned sdist once; return the suite with its directory and PYTHONPATH."""
    base = WORK / f"{suite.name}-{suite.version}"
    site = base / "site"
    ready = base / ".ready"
    if not ready.exists():
        shutil.rmtree(base, ignore_errors=True)
        download = base / "download"
        pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
        spec = f"{suite.name}=={suite.version}"
        run_quiet((*pip, "download", "--no-binary", ":all:", "--no-deps", "-d", str(download), spec))
        (sdist,) = download.glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(base / "src", filter="data")
            else:  # a Python without extraction filters (older patch releases); a pinned sdist from PyPI
                tar.extractall(base / "src")
        (source,) = (base / "src").iterdir()
        run_quiet((*pip, "install", "--no-compile", "--target", str(site), str(source), *suite.deps))
        ready.write_text(f"{suite.name}=={suite.version}\n")
    (source,) = (base / "src").iterdir()
    # Name the suite's own config (or a file with no pytest section in it): else pytest searches upward past
    # benchmarks/.work/ and picks up this repository's pyproject.toml as the third-party suite's config.
    config = next(name for name in CONFIGS if (source / name).is_file())
    pythonpath = os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))  # the caller's stays behind
    return replace(suite, cwd=source, env={"PYTHONPATH": pythonpath}, args=("-c", config, *suite.args))


def resolve(spec: str) -> Suite:
    if spec in PINNED:
        return fetch(PINNED[spec])
    path = REPO / "tests" if spec == "self" else Path(spec).resolve()
    if not path.is_dir():
        hint = " (this repository has no tests/ yet)" if spec == "self" else ""
        sys.exit(f"error: no test directory at {path}{hint}")
    name = "pytest-memguard tests/" if spec == "self" else str(path)
    return Suite(name, tests=str(path), cwd=REPO if spec == "self" else Path.cwd())


def parse_outcomes(output: str) -> Dict[str, int]:
    """The counts of pytest's closing line, e.g. '663 passed, 1 skipped, 8 warnings, 2332 subtests passed in 4.64s'."""
    for line in reversed(output.splitlines()):
        match = re.fullmatch(r"=*\s*(\d+ .*?) in [\d.]+s\b.*?=*", line.strip())
        if match:
            counts: Dict[str, int] = {}
            for part in match.group(1).split(", "):
                number, _, what = part.partition(" ")
                what = {"error": "errors", "warning": "warnings"}.get(what, what)
                if number.isdigit():
                    counts[what] = int(number)
            return counts
    return {}


def command(suite: Suite, args: Sequence[str]) -> Tuple[str, ...]:
    return (*PYTEST, *suite.args, suite.tests, *args)


def children_cpu() -> float:
    """User + system CPU seconds of every finished child: a cross-check on the wall time."""
    if sys.platform == "win32":
        return float("nan")
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(suite: Suite, label: str, args: Sequence[str], env: Dict[str, str]) -> Tuple[float, float, Dict[str, int]]:
    """Wall seconds, CPU seconds and outcome counts of one passing run; exits on anything else."""
    cmd = command(suite, args)
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=suite.cwd, env=env, capture_output=True, text=True, check=False)
    elapsed, cpu = time.perf_counter() - start, children_cpu() - cpu
    counts = parse_outcomes(proc.stdout)
    failure = did_not_pass(label, proc.returncode, counts, proc.stdout + proc.stderr)
    if failure:
        sys.exit(f"error: {failure}")
    return elapsed, cpu, counts


def did_not_pass(label: str, code: int, counts: Dict[str, int], output: str) -> Optional[str]:
    """Why a run does not count (it failed, errored or ran nothing), with its output's tail."""
    if code == 0 and not counts.get("failed") and not counts.get("errors") and counts:
        return None
    tail = "\n".join(output.splitlines()[-40:])
    return f"the {label} run did not pass (exit code {code}, outcomes {counts}):\n{tail}"


def run_pair(
    suite: Suite, pair: Sequence[Tuple[str, Sequence[str], Dict[str, str]]]
) -> Dict[str, Tuple[float, float, Dict[str, int]]]:
    """Start the runs of ``pair`` at the same moment and time each to its own exit: wall seconds,
    CPU seconds (from ``wait4``, per child) and outcome counts. Exits if one does not pass."""
    procs: Dict[int, Tuple[str, float, subprocess.Popen[bytes], IO[bytes]]] = {}
    results: Dict[str, Tuple[float, float, Dict[str, int]]] = {}
    failed = []
    with contextlib.ExitStack() as files:
        for label, args, env in pair:
            out: IO[bytes] = files.enter_context(tempfile.TemporaryFile())  # a pipe could fill up and stall the run
            proc = subprocess.Popen(command(suite, args), cwd=suite.cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
            procs[proc.pid] = (label, time.perf_counter(), proc, out)
        ended = []  # all reaped before any output is read, which would add to a later exit's time
        for _ in range(len(procs)):
            pid, status, usage = os.wait4(-1, 0)
            ended.append((pid, time.perf_counter(), status, usage))
        for pid, stopped, status, usage in ended:
            label, started, proc, written = procs[pid]
            elapsed = stopped - started
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
            written.seek(0)
            output = written.read().decode(errors="replace")
            counts = parse_outcomes(output)
            results[label] = (elapsed, usage.ru_utime + usage.ru_stime, counts)
            failure = did_not_pass(label, proc.returncode, counts, output)
            if failure:
                failed.append(failure)
    if failed:
        sys.exit("error: " + "\n".join(failed))
    return results


def version_of(what: str, env: Dict[str, str], cwd: Optional[Path]) -> str:
    version = f"getattr(m, '__version__', 0) or importlib.metadata.version({what!r})"
    code = f"import importlib.metadata, {what} as m; print({version}, m.__file__)"
    out = subprocess.run((sys.executable, "-c", code), env=env, cwd=cwd, capture_output=True, text=True, check=False)
    return out.stdout.strip() or f"not importable: {out.stderr.strip().splitlines()[-1:]}"


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="suites: " + ", ".join(PINNED))
    parser.add_argument("--suite", default="more-itertools", help="more-itertools (default), attrs, self, or a path")
    compare = "what to compare with the plain run (repeatable; default: memguard)"
    parser.add_argument("--mode", action="append", choices=sorted(MODES), help=compare)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first, to fill caches (default 1)")
    parser.add_argument(
        "--together",
        action="store_true",
        help="run each mode at the same time as a plain run of its own (needs 2 free cores): both see the machine "
        "in the same mood, so a round's ratio is much steadier",
    )
    opts = parser.parse_args(argv)
    modes: List[str] = list(dict.fromkeys(opts.mode or ["memguard"]))
    if opts.rounds < 1 or opts.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    if opts.together and not hasattr(os, "wait4"):
        parser.error("--together needs os.wait4 (POSIX)")

    suite = resolve(opts.suite)
    dropped = [k for k in UNSET if k in os.environ]
    ours = {"PYTHONHASHSEED": "0", **suite.env}
    env = {**{k: v for k, v in os.environ.items() if k not in UNSET}, **ours}
    print(f"python {sys.version.split()[0]} ({sys.executable})")
    print("pytest", version_of("pytest", env, suite.cwd))
    print("pytest-memguard", version_of("pytest_memguard", env, suite.cwd))
    if suite.module:
        print(suite.name, "under test:", version_of(suite.module, env, suite.cwd))
    prefix = shlex.join(["env", *(arg for k in dropped for arg in ("-u", k)), *(f"{k}={v}" for k, v in ours.items())])
    labelled = [("plain", ())] + [(m, MODES[m]) for m in modes]
    for label, args in labelled:
        print(f"{label:>9}: cd {shlex.quote(str(suite.cwd))} && {prefix} {shlex.join(command(suite, args))}")

    # the plain runs each mode is compared with: its own partners under --together
    base_of = {label: f"plain/{label}" if opts.together else "plain" for label, _ in labelled[1:]}
    runs = [*dict.fromkeys(base_of.values()), *base_of] if opts.together else [label for label, _ in labelled]
    times: Dict[str, List[float]] = {label: [] for label in runs}
    cpus: Dict[str, List[float]] = {label: [] for label in runs}
    expected: Dict[str, int] = {}
    for round_no in range(-opts.warmup + 1, opts.rounds + 1):
        line = [f"warmup {round_no + opts.warmup}/{opts.warmup}" if round_no < 1 else f"round {round_no}/{opts.rounds}"]
        timed: Dict[str, Tuple[float, float, Dict[str, int]]] = {}
        if opts.together:
            for label, args in labelled[1:]:
                pair = [(base_of[label], (), env), (label, args, {**env, **MODE_ENV.get(label, {})})]
                timed.update(run_pair(suite, pair if round_no % 2 else pair[::-1]))  # who starts first alternates
        else:
            for label, args in labelled:
                timed[label] = run_once(suite, label, args, {**env, **MODE_ENV.get(label, {})})
        for label, (elapsed, cpu, counts) in timed.items():
            counts.pop("warnings", None)  # may legitimately differ; the outcomes may not
            if not expected:
                expected = counts
                print(f"outcomes: {counts}")
            elif counts != expected:
                sys.exit(f"error: the {label} run had outcomes {counts}, but the first run had {expected}")
            if round_no >= 1:
                times[label].append(elapsed)
                cpus[label].append(cpu)
            line.append(f"{label} {elapsed:.2f}s (cpu {cpu:.2f}s)")
        print("  ".join(line), flush=True)

    n_tests = sum(expected.get(k, 0) for k in OUTCOMES)
    title = f"{suite.name}{' ' + suite.version if suite.version else ''} ({n_tests} tests)"
    print()
    for what, series in (("wall", times), ("CPU (user+sys)", cpus)):
        medians = ", ".join(f"{label} {statistics.median(t):.2f}s" for label, t in series.items())
        print(f"median {what} time: {medians}")
    if opts.together:
        print("each mode ran at the same time as its own plain run (--together)")
    for label, _ in labelled[1:]:
        print(f"{label} CPU time: median overhead {overhead(cpus[base_of[label]], cpus[label])}")
    for label, args in labelled[1:]:
        shown = " ".join(args) or " ".join(f"{k}={v}" for k, v in MODE_ENV.get(label, {}).items())
        print(f"{title}: {shown} median overhead {overhead(times[base_of[label]], times[label])}")
    if "memguard" in modes:
        print(f"{title}: {count_suspects(suite, env)}")
    return 0


def count_suspects(suite: Suite, env: Dict[str, str]) -> str:
    """One more --memguard run, with results as JSON: how many tests leak screening re-ran."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        subprocess.run(command(suite, ("--memguard", f"--memguard-json={results}")), cwd=suite.cwd, env=env,
                       capture_output=True, check=False)  # fmt: skip
        if not results.exists():
            return "leak screening: no results file was written"
        tests = json.loads(results.read_text())["tests"]
    suspects = [entry["leak"] for entry in tests.values() if "leak" in entry]
    confirmed = sum(1 for leak in suspects if leak["confirmed"])
    rerun = sum(1 for leak in suspects if leak["runs"] > 1)
    return (
        f"leak screening: {len(suspects)} suspect(s) of {len(tests)} tests, {rerun} re-run to confirm, "
        f"{confirmed} confirmed"
    )


def median_interval(values: Sequence[float], confidence: float = 0.95) -> Optional[Tuple[float, float]]:
    """A distribution-free confidence interval for the median: the k-th smallest and k-th largest
    value, with k the largest rank whose binomial(n, 1/2) coverage is still ``confidence``
    (n = 40: the 14th and 27th of 40, 96.2%). ``None`` for fewer than 6 values, too few for 95%."""
    ordered, count = sorted(values), len(values)
    rank = 0
    for k in range(1, count // 2 + 1):
        # the median lies between the k-th smallest and the k-th largest unless k or more values fall on one side
        if sum(math.comb(count, i) for i in range(k, count - k + 1)) / 2**count < confidence:
            break
        rank = k
    return (ordered[rank - 1], ordered[count - rank]) if rank else None


def overhead(base: Sequence[float], other: Sequence[float]) -> str:
    """The median of the per-round ratios other/base, as a percentage, with a 95% confidence
    interval for that median (:func:`median_interval`) and the ratios' spread."""
    ratios = [b / a for a, b in zip(base, other)]
    interval = median_interval(ratios)
    shown = f"95% CI {pct(interval[0])} … {pct(interval[1])}; " if interval else ""
    spread = f"({shown}min {pct(min(ratios))}, max {pct(max(ratios))})"
    return f"{pct(statistics.median(ratios))} {spread} over {len(ratios)} rounds"


if __name__ == "__main__":
    sys.exit(main())

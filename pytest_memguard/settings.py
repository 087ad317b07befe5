"""Every ``--memguard-*`` option and its ``memguard_*`` ini twin, resolved once into frozen settings."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from .limits import Limit, LimitError, parse_limit_lines
from .tolerance import ToleranceError, TolerancePolicy, default_policy

__all__ = ["Settings", "add_options"]

DEFAULT_TOP = 10
DEFAULT_RERUNS = 3
DEFAULT_BASELINE = "memguard-baseline.yaml"
GATE_MODES = ("fail", "warn")
LEAK_MODES = ("fail", "warn", "off")
LEAK_SLOW_MODES = ("skip", "check")
DEFAULT_LEAK_RUNS = 6
DEFAULT_STACK_DEPTH = 1


@dataclass(frozen=True)
class Settings:
    """What the user asked for; command line beats ini, ini beats defaults."""

    enabled: bool = False
    trace: bool = False
    top: int = DEFAULT_TOP
    limits: dict[str, Optional[Limit]] = field(default_factory=dict)
    baseline_path: Optional[Path] = None
    baseline_given: str = ""  # where a baseline path was asked for: "option", "ini", or "" (the default)
    update_baseline: bool = False
    gate: str = "fail"
    reruns: int = DEFAULT_RERUNS
    tolerances: TolerancePolicy = field(default_factory=default_policy)
    json_path: Optional[Path] = None
    markdown_path: Optional[Path] = None
    junit_path: Optional[Path] = None
    benchmark_json_path: Optional[Path] = None
    step_summary: bool = True
    leaks: str = "fail"
    leak_runs: int = DEFAULT_LEAK_RUNS
    leak_slow: str = "skip"
    stack_depth: int = DEFAULT_STACK_DEPTH

    @property
    def measure_all(self) -> bool:
        """Every test is measured: ``--memguard`` or a global limit asks for it."""
        return self.enabled or bool(self.limits)

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        def flag(name: str) -> bool:
            value = config.getoption(name)
            return bool(config.getini(name)) if value is None else bool(value)

        try:
            limits = parse_limit_lines(config.getini("memguard_limits"), "ini option memguard_limits")
            limits.update(parse_limit_lines(config.getoption("memguard_limit") or [], "--memguard-limit"))
        except LimitError as exc:
            raise pytest.UsageError(f"memguard: {exc}") from None
        settings = cls(
            enabled=flag("memguard"),
            trace=flag("memguard_trace"),
            top=_count(config, "memguard_top"),
            limits=limits,
            baseline_path=_baseline_path(config),
            update_baseline=flag("memguard_update_baseline"),
            gate=_choice(config, "memguard_gate", GATE_MODES),
            reruns=_count(config, "memguard_reruns"),
            tolerances=_tolerance_policy(config),
            json_path=_output_path(config, "memguard_json"),
            markdown_path=_output_path(config, "memguard_markdown"),
            junit_path=_output_path(config, "memguard_junit"),
            benchmark_json_path=_output_path(config, "memguard_benchmark_json"),
            step_summary=_choice(config, "memguard_step_summary", ("on", "off")) == "on",
            leaks=_choice(config, "memguard_leaks", LEAK_MODES),
            # a leak is growth in at least three steps (leak_detector.MIN_STEPS)
            leak_runs=_count(config, "memguard_leak_runs", minimum=3),
            leak_slow=_choice(config, "memguard_leak_slow", LEAK_SLOW_MODES),
            stack_depth=_count(config, "memguard_stack_depth", minimum=1, maximum=65535),  # tracemalloc's limit
            baseline_given=_given(config, "memguard_baseline"),
        )
        _refuse_conflicts(settings, config)
        return settings


def _refuse_conflicts(settings: Settings, config: pytest.Config) -> None:
    """Options that are each valid but together would lose data or do nothing, unsaid."""
    reports = {
        "--memguard-json": settings.json_path,
        "--memguard-markdown": settings.markdown_path,
        "--memguard-junit": settings.junit_path,
        "--memguard-benchmark-json": settings.benchmark_json_path,
    }
    baseline = settings.baseline_path.resolve() if settings.baseline_path is not None else None
    for option, path in reports.items():
        if path is not None and path.resolve() == baseline:
            raise pytest.UsageError(f"memguard: {option} {path} is the baseline; the report would overwrite it")
    if config.getoption("memguard_update_baseline") and not settings.measure_all:
        # without it nothing is measured, so nothing would be recorded, and nothing said
        raise pytest.UsageError("memguard: --memguard-update-baseline records what --memguard measures: add --memguard")


def _given(config: pytest.Config, name: str) -> str:
    """Where an option was set: ``"option"`` (the command line), ``"ini"``, or ``""``."""
    if config.getoption(name):
        return "option"
    return "ini" if str(config.getini(name) or "").strip() else ""


def _choice(config: pytest.Config, name: str, choices: tuple[str, ...]) -> str:
    value = config.getoption(name) or str(config.getini(name)).strip() or choices[0]
    if value not in choices:
        raise pytest.UsageError(f"memguard: {name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _count(config: pytest.Config, name: str, *, minimum: int = 0, maximum: Optional[int] = None) -> int:
    option = config.getoption(name)
    value = option if option is not None else _non_negative_int(config.getini(name), name)
    if value < minimum:
        raise pytest.UsageError(f"memguard: {name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise pytest.UsageError(f"memguard: {name} must be at most {maximum}, got {value}")
    return int(value)


def _output_path(config: pytest.Config, name: str) -> Optional[Path]:
    """A report path: the option as given (relative to the working directory), else the ini value
    (relative to the ini file), else none."""
    option = config.getoption(name)
    if option:
        return Path(option).absolute()
    ini_value = str(config.getini(name) or "").strip()
    return _ini_base(config) / ini_value if ini_value else None


def _ini_base(config: pytest.Config) -> Path:
    """Paths in ini options are relative to the ini file (else the rootdir), as pytest's own are."""
    return config.inipath.parent if config.inipath is not None else config.rootpath


def _baseline_path(config: pytest.Config) -> Path:
    """``--memguard-baseline``, else ini ``memguard_baseline``, else the default next to the ini file."""
    return _output_path(config, "memguard_baseline") or _ini_base(config) / DEFAULT_BASELINE


def _tolerance_policy(config: pytest.Config) -> TolerancePolicy:
    from .config_file import ConfigFileError, load_config_file

    lines = [*config.getini("memguard_tolerance"), *(config.getoption("memguard_tolerance") or [])]
    overrides = []
    for line in lines:
        figure, sep, spec = str(line).partition("=")
        if not sep:
            raise pytest.UsageError(f"memguard: tolerance {line!r} is not FIGURE=SPEC, e.g. 'rss=15%'")
        overrides.append((figure.strip(), spec.strip()))
    try:
        policy = default_policy(overrides)
        path = _output_path(config, "memguard_config")
        if path is not None:
            policy = load_config_file(path, policy)
    except (ToleranceError, ConfigFileError) as exc:
        raise pytest.UsageError(f"memguard: {exc}") from None
    return policy


def _whole_number(value: Any) -> Optional[int]:
    """``value`` as a whole number >= 0, or ``None``: one rule for options and ini values."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _non_negative_int(value: Any, name: str) -> int:
    number = _whole_number(value)
    if number is None:
        raise pytest.UsageError(f"memguard: {name} must be a whole number >= 0, got {value!r}")
    return number


def _count_type(value: str) -> int:
    number = _whole_number(value)
    if number is None:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return number


def add_options(parser: pytest.Parser) -> None:
    """Register the flags and their ini twins (each flag's help names its twin)."""
    group = parser.getgroup("memguard", "memory measurement and limits (pytest-memguard)")
    group.addoption(
        "--memguard",
        action="store_true",
        default=None,
        help="measure peak and retained memory of every test. ini: memguard",
    )
    group.addoption(
        "--memguard-trace",
        action="store_true",
        default=None,
        dest="memguard_trace",
        help="also measure the Python heap with tracemalloc (slower). ini: memguard_trace",
    )
    group.addoption(
        "--memguard-top",
        type=_count_type,
        default=None,
        metavar="N",
        dest="memguard_top",
        help=f"show the N heaviest tests by peak and by retained memory (0: none; default {DEFAULT_TOP}). "
        "ini: memguard_top",
    )
    group.addoption(
        "--memguard-limit",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        dest="memguard_limit",
        help="a limit for every test, e.g. 'peak=500 MB'; repeatable; keys: peak, retained, heap_peak, "
        "heap_retained, fds. Markers override it. ini: memguard_limits (one per line)",
    )
    group.addoption(
        "--memguard-baseline",
        default=None,
        metavar="PATH",
        dest="memguard_baseline",
        help=f"YAML baseline to compare with (default: {DEFAULT_BASELINE} next to the ini file). "
        "ini: memguard_baseline",
    )
    group.addoption(
        "--memguard-update-baseline",
        action="store_true",
        default=None,
        dest="memguard_update_baseline",
        help="write the figures of the tests that ran into the baseline (others are kept); "
        "regressions do not fail the run. ini: memguard_update_baseline",
    )
    group.addoption(
        "--memguard-gate",
        choices=GATE_MODES,
        default=None,
        dest="memguard_gate",
        help="fail: regressions against the baseline fail the run (default); warn: report them only. "
        "ini: memguard_gate",
    )
    group.addoption(
        "--memguard-reruns",
        type=_count_type,
        default=None,
        metavar="N",
        dest="memguard_reruns",
        help=f"re-measure a test N times before calling it a regression (default {DEFAULT_RERUNS}; 0: never). "
        "ini: memguard_reruns",
    )
    group.addoption(
        "--memguard-tolerance",
        action="append",
        default=None,
        metavar="FIGURE=SPEC",
        dest="memguard_tolerance",
        help="tolerance for baseline comparison, e.g. 'rss=15%%' or 'heap_peak=5%% floor=8KiB'; figures: all, rss, "
        "heap, rss_peak, rss_retained, heap_peak, heap_retained; repeatable. ini: memguard_tolerance",
    )
    group.addoption(
        "--memguard-config",
        default=None,
        metavar="PATH",
        dest="memguard_config",
        help="YAML file with tolerances and per-test rules (see configs/memguard.yaml). ini: memguard_config",
    )
    group.addoption(
        "--memguard-json",
        default=None,
        metavar="PATH",
        dest="memguard_json",
        help="write machine-readable results (schema in docs; read by 'memguard compare'). ini: memguard_json",
    )
    group.addoption(
        "--memguard-leaks",
        choices=LEAK_MODES,
        default=None,
        dest="memguard_leaks",
        help="what a confirmed leak does: fail the test (default), warn, or off (no screening). ini: memguard_leaks",
    )
    group.addoption(
        "--memguard-leak-runs",
        type=_count_type,
        default=None,
        metavar="N",
        dest="memguard_leak_runs",
        help=f"at most N measured re-runs to confirm a leak suspect (default {DEFAULT_LEAK_RUNS}, at least 3). "
        "ini: memguard_leak_runs",
    )
    group.addoption(
        "--memguard-leak-slow",
        choices=LEAK_SLOW_MODES,
        default=None,
        dest="memguard_leak_slow",
        help="a slow test that is a suspect by a small growth only: skip its re-runs and say so (default), "
        "or check it; likewise the allocation analysis of a slow test confirmed as leaking (one more traced "
        "run). ini: memguard_leak_slow",
    )
    group.addoption(
        "--memguard-stack-depth",
        type=_count_type,
        default=None,
        metavar="N",
        dest="memguard_stack_depth",
        help=f"frames per allocation site in the allocation analysis of flagged tests, and tracemalloc's "
        f"traceback limit when memguard starts tracing (default {DEFAULT_STACK_DEPTH}, at least 1; more frames "
        "cost more). ini: memguard_stack_depth",
    )
    parser.addini("memguard_stack_depth", "frames per allocation site", default=str(DEFAULT_STACK_DEPTH))
    parser.addini("memguard_leaks", "fail, warn or off for confirmed leaks", default="fail")
    parser.addini("memguard_leak_runs", "measured re-runs to confirm a leak", default=str(DEFAULT_LEAK_RUNS))
    parser.addini(
        "memguard_leak_slow", "skip or check slow suspects with a small growth (and analyse slow leaks)", default="skip"
    )
    reports = (
        ("--memguard-markdown", "memguard_markdown", "a GitHub-flavoured markdown report (for a PR comment)"),
        ("--memguard-junit", "memguard_junit", "a JUnit XML file: memory figures as properties, failures"),
        ("--memguard-benchmark-json", "memguard_benchmark_json", "github-action-benchmark customSmallerIsBetter"),
    )
    for flag_name, ini_name, what in reports:
        group.addoption(flag_name, default=None, metavar="PATH", dest=ini_name, help=f"write {what}. ini: {ini_name}")
        parser.addini(ini_name, f"path: {what}", default="")
    group.addoption(
        "--memguard-step-summary",
        choices=("on", "off"),
        default=None,
        dest="memguard_step_summary",
        help="append the markdown report to $GITHUB_STEP_SUMMARY when it is set (default on). "
        "ini: memguard_step_summary",
    )
    parser.addini("memguard_step_summary", "on or off: append to $GITHUB_STEP_SUMMARY", default="on")
    parser.addini("memguard_json", "path of the JSON results file", default="")
    parser.addini("memguard_baseline", "path of the YAML baseline", default="")
    parser.addini("memguard_update_baseline", "write the baseline instead of gating", type="bool", default=False)
    parser.addini("memguard_gate", "fail or warn on regressions", default="fail")
    parser.addini("memguard_reruns", "re-measurements before a regression counts", default=str(DEFAULT_RERUNS))
    parser.addini("memguard_tolerance", "baseline tolerances, one FIGURE=SPEC per line", type="linelist", default=[])
    parser.addini("memguard_config", "YAML file with tolerances and per-test rules", default="")
    parser.addini("memguard", "measure the memory of every test (like --memguard)", type="bool", default=False)
    parser.addini("memguard_trace", "also measure the Python heap with tracemalloc", type="bool", default=False)
    parser.addini("memguard_top", "how many heaviest tests the summary shows", default=str(DEFAULT_TOP))
    parser.addini("memguard_limits", "limits for every test, one KEY=VALUE per line", type="linelist", default=[])

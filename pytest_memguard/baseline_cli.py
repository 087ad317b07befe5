"""``memguard compare`` and ``memguard merge``: the gate outside pytest, with the same rules.

``compare`` judges a ``--memguard-json`` results file against a baseline (exit 1 on
regressions, like the gate); ``merge`` joins the baselines of CI shards into one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .baseline import BaselineError, compare_figures, dump_baseline, load_baseline, merge_baselines, write_atomic
from .config_file import ConfigFileError, load_config_file
from .gate import BaselineGate, verdict_for
from .record import MemoryRecord, measurement_from
from .reporting.json_report import ResultsError, load_results
from .reporting.terminal import render_gate
from .tolerance import ToleranceError, default_policy

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_compare_command", "add_merge_command"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_compare_command(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="judge a results file (pytest --memguard-json) against a baseline; exit 1 on regressions",
        description=(
            "Compare every test in RESULTS with BASELINE using the gate's tolerances. Tolerances set by markers "
            "are not in the results file: give them with --tolerance or --config if they matter."
        ),
        epilog="exit status: 0 no regression (or --gate warn), 1 regressions, 2 unusable input.",
    )
    parser.add_argument("baseline", type=Path, help="the YAML baseline")
    parser.add_argument("results", type=Path, help="a results file written by pytest --memguard-json")
    parser.add_argument("--tolerance", action="append", default=[], metavar="FIGURE=SPEC", help="e.g. rss=15%%")
    parser.add_argument("--config", type=Path, metavar="PATH", help="YAML file with tolerances and rules")
    parser.add_argument("--gate", choices=("fail", "warn"), default="fail", help="warn: report, exit 0")
    parser.set_defaults(handler=run_compare, command_parser=parser)


def run_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        overrides = []
        for line in args.tolerance:
            figure, sep, spec = line.partition("=")
            if not sep:
                raise ToleranceError(f"tolerance {line!r} is not FIGURE=SPEC, e.g. 'rss=15%'")
            overrides.append((figure.strip(), spec.strip()))
        policy = default_policy(overrides)
        if args.config is not None:
            policy = load_config_file(args.config, policy)
        baseline = load_baseline(args.baseline)
        if baseline is None:
            raise BaselineError(f"{args.baseline}: no such file (record one with pytest --memguard-update-baseline)")
        results, environment, partial = load_results(args.results)
    except (ToleranceError, ConfigFileError, BaselineError, ResultsError) as exc:
        parser.error(str(exc))
    gate = BaselineGate(args.baseline, baseline, policy)
    gate.environment = dict(environment) or gate.environment
    records = []
    for nodeid, figures in sorted(results.items()):
        entry = baseline.tests.get(nodeid)
        findings = [] if entry is None else compare_figures(nodeid, entry, figures, policy.for_test(nodeid))
        measurement = measurement_from(figures)
        message = "; ".join(finding.message() for finding in findings)
        records.append(
            MemoryRecord(nodeid, measurement, verdict_for(findings, entry is not None), message, tuple(findings))
        )
    result = gate.finish(records, update=False, partial=partial)
    print(render_gate(result, baseline=args.baseline, gate=args.gate, update=False, brief=False, remeasured=False))
    if partial:
        shown = ", ".join(partial[:5]) + (", …" if len(partial) > 5 else "")
        print(f"{len(partial)} test(s) that did not pass on their own not compared (a run cut short): {shown}")
    return EXIT_FAILURE if result.failed and args.gate == "fail" else EXIT_OK


def add_merge_command(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="join baselines from CI shards into one",
        description=(
            "Merge baselines (e.g. one per CI shard) into one file. A test found in several keeps the larger "
            "value of each figure, and is named."
        ),
    )
    parser.add_argument("baselines", nargs="+", type=Path, metavar="BASELINE", help="YAML baselines to merge")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="PATH", help="the merged baseline")
    parser.set_defaults(handler=run_merge, command_parser=parser)


def run_merge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    loaded = []
    try:
        for path in args.baselines:
            baseline = load_baseline(path)
            if baseline is None:
                raise BaselineError(f"{path}: no such file")
            loaded.append(baseline)
    except BaselineError as exc:
        parser.error(str(exc))
    merged, conflicts = merge_baselines(loaded)
    try:
        written = write_atomic(args.output, dump_baseline(merged))
    except (OSError, UnicodeError) as exc:
        parser.error(f"{args.output}: cannot be written ({exc})")
    state = "written" if written else "unchanged"
    print(f"merged {len(loaded)} baselines into {args.output} ({state}): {len(merged.tests)} tests")
    if conflicts:
        print(f"{len(conflicts)} test(s) were in several with different figures; kept the larger of each:")
        print("\n".join(f"  {nodeid}" for nodeid in conflicts))
    return EXIT_OK

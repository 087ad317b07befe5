"""``memguard compare`` and ``memguard merge`` (in-process, on files written by the same code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_memguard.baseline import Baseline, dump_baseline, load_baseline
from pytest_memguard.cli import main

MIB = 1024 * 1024


def write_baseline(path: Path, tests: dict[str, dict[str, int]]) -> Path:
    path.write_text(dump_baseline(Baseline(tests=tests, environment={"python": "3.11"})))
    return path


def write_results(path: Path, tests: dict[str, dict[str, int]]) -> Path:
    document = {"schema": 1, "environment": {"python": "3.11"}, "tests": {k: {"figures": v} for k, v in tests.items()}}
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    baseline = write_baseline(
        tmp_path / "baseline.yaml",
        {"t.py::grows": {"rss_peak": 10 * MIB}, "t.py::same": {"rss_peak": 10 * MIB}, "t.py::gone": {"rss_peak": 1}},
    )
    results = write_results(
        tmp_path / "results.json",
        {"t.py::grows": {"rss_peak": 20 * MIB}, "t.py::same": {"rss_peak": 10 * MIB}, "t.py::new": {"rss_peak": 5}},
    )
    return baseline, results


def test_compare_exits_1_on_regressions_and_lists_them(files: tuple[Path, Path], capsys) -> None:
    baseline, results = files
    assert main(["compare", str(baseline), str(results)]) == 1
    out = capsys.readouterr().out
    assert f"memguard gate: FAILED, 1 regression against {baseline}" in out
    assert "t.py::grows" in out
    assert "+10.0 MiB, +100%" in out
    assert "1 test(s) not in the baseline yet" in out
    assert "1 test(s) in the baseline did not run here" in out


def test_compare_warn_and_tolerance(files: tuple[Path, Path], capsys) -> None:
    baseline, results = files
    assert main(["compare", str(baseline), str(results), "--gate", "warn"]) == 0
    assert main(["compare", str(baseline), str(results), "--tolerance", "rss=150%"]) == 0
    assert "passed, no regression" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not a readable JSON results file"),
        ('{"tests": []}', "no 'tests' mapping"),
        ('{"schema": 9, "tests": {}}', "results schema 9"),
        ('{"schema": 1, "tests": {"a": {"figures": {"rss_peak": "big"}}}}', "test 'a' has no valid 'figures'"),
    ],
)
def test_compare_bad_results_is_a_usage_error(files: tuple[Path, Path], capsys, content: str, message: str) -> None:
    baseline, results = files
    results.write_text(content)
    assert main(["compare", str(baseline), str(results)]) == 2
    assert message in capsys.readouterr().err


def test_compare_missing_baseline(files: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    _, results = files
    assert main(["compare", str(tmp_path / "none.yaml"), str(results)]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err


def test_merge_shards(tmp_path: Path, capsys) -> None:
    one = write_baseline(tmp_path / "one.yaml", {"a": {"rss_peak": 1}, "b": {"rss_peak": 5}})
    two = write_baseline(tmp_path / "two.yaml", {"b": {"rss_peak": 7}, "c": {"rss_peak": 2}})
    out = tmp_path / "merged.yaml"
    assert main(["merge", str(one), str(two), "-o", str(out)]) == 0
    merged = load_baseline(out)
    assert merged is not None
    assert merged.tests == {"a": {"rss_peak": 1}, "b": {"rss_peak": 7}, "c": {"rss_peak": 2}}
    printed = capsys.readouterr().out
    assert f"merged 2 baselines into {out} (written): 3 tests" in printed
    assert "  b" in printed


def test_merge_refuses_a_corrupt_shard_and_writes_nothing(tmp_path: Path, capsys) -> None:
    good = write_baseline(tmp_path / "good.yaml", {"a": {"rss_peak": 1}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: 1\ntests:\n  a: {rss_peak: -1}\n")
    out = tmp_path / "merged.yaml"
    assert main(["merge", str(good), str(bad), "-o", str(out)]) == 2
    assert "rss_peak cannot be negative" in capsys.readouterr().err
    assert not out.exists()


def test_merge_into_an_unwritable_path_is_a_usage_error(tmp_path: Path, capsys) -> None:
    one = write_baseline(tmp_path / "one.yaml", {"a": {"rss_peak": 1}})
    assert main(["merge", str(one), "-o", str(tmp_path)]) == 2  # a directory
    assert f"{tmp_path}: cannot be written" in capsys.readouterr().err


def test_compare_leaves_out_tests_that_did_not_pass_on_their_own(pytester: pytest.Pytester, capsys) -> None:
    """As the gate in the run does: their figures are of a run cut short."""
    pytester.makepyfile(
        "import os, pytest\n"
        "SIZE = int(os.environ.get('SIZE', '4')) * 1024 * 1024\n"
        "def test_ok():\n    block = bytearray(4 * 1024 * 1024)\n"
        "def test_fails_later():\n    block = bytearray(SIZE)\n    assert SIZE == 4 * 1024 * 1024\n"
        "def test_skips_later():\n    block = bytearray(SIZE)\n    if SIZE > 4 * 1024 * 1024: pytest.skip('no')\n"
    )
    pytester.runpytest_subprocess("--memguard", "--memguard-update-baseline", "--memguard-leaks=off")
    pytester._monkeypatch.setenv("SIZE", "32")  # type: ignore[attr-defined]
    pytester.runpytest_subprocess("--memguard", "--memguard-leaks=off", "--memguard-json=r.json")
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    name = "test_compare_leaves_out_tests_that_did_not_pass_on_their_own.py::"
    assert tests[name + "test_fails_later"]["partial_run"] is True
    assert tests[name + "test_skips_later"]["partial_run"] is True
    assert "partial_run" not in tests[name + "test_ok"]
    capsys.readouterr()
    assert main(["compare", str(pytester.path / "memguard-baseline.yaml"), str(pytester.path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "memguard gate: passed" in out
    assert "2 test(s) that did not pass on their own not compared (a run cut short): " in out
    assert "did not run here" not in out  # they ran: listed once, above


def test_results_file_from_a_real_run_round_trips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a():\n    block = bytearray(4 * 1024 * 1024)\n")
    pytester.runpytest_subprocess("--memguard", "--memguard-update-baseline", "--memguard-json=r.json")
    assert main(["compare", str(pytester.path / "memguard-baseline.yaml"), str(pytester.path / "r.json")]) == 0
    data = json.loads((pytester.path / "r.json").read_text())
    assert data["schema"] == 1
    assert data["tests"]["test_results_file_from_a_real_run_round_trips.py::test_a"]["verdict"] == "new"
    assert data["gate"]["new"] == 1

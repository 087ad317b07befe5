"""Baseline file format, validation, comparison rules, update and merge (pure units)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies

from pytest_memguard.baseline import (
    Baseline,
    BaselineError,
    _load_canonical,
    _StrictLoader,
    compare_figures,
    dump_baseline,
    load_baseline,
    locked_for_update,
    merge_baselines,
    update_baseline,
    write_atomic,
)
from pytest_memguard.config_file import ConfigFileError, load_config_file
from pytest_memguard.gate import BaselineGate, lowest
from pytest_memguard.record import MemoryRecord
from pytest_memguard.tolerance import DEFAULTS, NO_ABSOLUTE, Tolerance, ToleranceError, default_policy, parse_tolerance
from pytest_memguard.tracker import Measurement

KIB = 1024
MIB = 1024 * KIB
ENV = {"implementation": "CPython", "platform": "linux-x86_64", "python": "3.11"}


# -- tolerance ------------------------------------------------------------------
def test_threshold_is_relative_for_small_absolute_for_large_and_never_under_the_floor() -> None:
    rss = DEFAULTS["rss_peak"]
    assert rss.threshold(0) == 256 * KIB  # floor
    assert rss.threshold(5 * MIB) == round(0.1 * 5 * MIB)  # relative
    assert rss.threshold(500 * MIB) == 768 * KIB  # absolute
    assert DEFAULTS["heap_peak"].threshold(100 * MIB) == 512 * KIB


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("15%", Tolerance(0.15, 256 * KIB, NO_ABSOLUTE)),
        ("15% floor=1MiB", Tolerance(0.15, MIB, NO_ABSOLUTE)),
        ("2.5%, absolute=4 MB", Tolerance(0.025, 256 * KIB, 4_000_000)),
        ("floor = 1 MiB", Tolerance(0.10, MIB, 768 * KIB)),
        (20, Tolerance(0.20, 256 * KIB, NO_ABSOLUTE)),
    ],
)
def test_parse_tolerance(spec: object, expected: Tolerance) -> None:
    assert parse_tolerance(spec, DEFAULTS["rss_peak"]) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lots", "neither a percentage nor KEY=SIZE"),
        ("10% ceiling=1MiB", "unknown tolerance part 'ceiling'"),
        ("floor=big", "floor= in tolerance 'floor=big'"),
        ("", "is not a tolerance"),
        (0.2, "0.2 is ambiguous: a number is read as a percentage \\(0.2%\\); write '20%' for 20 percent, or '0.2%'"),
    ],
)
def test_bad_tolerance(spec: object, message: str) -> None:
    with pytest.raises(ToleranceError, match=message):
        parse_tolerance(spec, DEFAULTS["rss_peak"])


def test_policy_overrides_and_rules(tmp_path: Path) -> None:
    policy = default_policy([("rss", "20%"), ("heap_peak", "floor=8KiB")])
    assert policy.defaults["rss_retained"].relative == 0.20
    assert policy.defaults["heap_peak"].floor == 8 * KIB
    config = tmp_path / "memguard.yaml"
    config.write_text(
        "tolerance:\n  heap: 5%\nrules:\n  - match: 'tests/slow/*'\n    tolerance:\n      rss_peak: 50%\n"
    )
    policy = load_config_file(config, policy)
    assert policy.for_test("tests/fast/test_a.py::t")["rss_peak"].relative == 0.20
    assert policy.for_test("tests/slow/test_b.py::t")["rss_peak"].relative == 0.50
    assert policy.for_test("tests/slow/test_b.py::t")["heap_peak"].relative == 0.05
    marker = {"rss_peak": Tolerance(0.9, 0, 0)}
    assert policy.for_test("tests/slow/test_b.py::t", marker)["rss_peak"].relative == 0.9


def test_rule_brackets_match_a_parametrization_literally(tmp_path: Path) -> None:
    config = tmp_path / "memguard.yaml"
    config.write_text("rules:\n  - match: 'test_p.py::test_p[big]'\n    tolerance:\n      all: 500%\n")
    policy = load_config_file(config, default_policy())
    assert policy.for_test("test_p.py::test_p[big]")["rss_peak"].relative == 5.0
    assert policy.for_test("test_p.py::test_p[b]")["rss_peak"].relative != 5.0  # not a set of letters


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tolerance: [1, 2]\n", "expected a mapping of figure to tolerance"),
        ("tolerance:\n  rsss: 5%\n", "unknown figure 'rsss'"),
        ("rules: {match: x}\n", "'rules' must be a list"),
        ("rules:\n  - pattern: x\n", r"rules\[1\]: expected \{match: GLOB"),
        ("colour: blue\n", "unknown key\\(s\\) colour"),
        ("tolerance: {rss: '5 parsecs'}\n", "neither a percentage"),
        ("a: [\n", "is not valid YAML"),
    ],
)
def test_bad_config_file(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "memguard.yaml"
    config.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        load_config_file(config, default_policy())


# -- file format ----------------------------------------------------------------
def sample() -> Baseline:
    return Baseline(
        tests={
            "tests/test_b.py::test_two[x-1]": {"rss_peak": 2 * MIB, "rss_retained": -4096},
            "tests/test_a.py::test_one": {"rss_retained": 0, "rss_peak": MIB, "heap_peak": 5000},
        },
        environment=ENV,
    )


def test_dump_is_sorted_stable_and_round_trips(tmp_path: Path) -> None:
    text = dump_baseline(sample())
    assert text.index("schema: 1") < text.index("environment:") < text.index("tests:")
    assert text.index("test_a.py") < text.index("test_b.py")
    assert text.index("heap_peak") < text.index("rss_peak: 1048576")
    path = tmp_path / "baseline.yaml"
    path.write_text(text)
    loaded = load_baseline(path)
    assert loaded == sample()
    assert dump_baseline(loaded) == text


@settings(max_examples=300, deadline=None)
@given(strategies.text(strategies.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))
def test_any_test_id_reads_back_as_itself(params: str) -> None:
    """Both readers (the fast line-based one and PyYAML, which a hand-edited file goes through)
    read back every id as written: raw DEL, C1 controls or U+2028 in a key made files we could
    not read (a directory name was enough) or read under another key."""
    nodeid = f"tests/test_a.py::test_p[{params}]"
    text = dump_baseline(Baseline(tests={nodeid: {"rss_peak": 1}}, environment=ENV))
    fast = _load_canonical(text)
    assert fast is not None
    assert list(fast["tests"]) == [nodeid]
    assert list(yaml.load(text, Loader=_StrictLoader)["tests"]) == [nodeid]


def test_an_id_yaml_cannot_hold_fails_the_write_and_writes_nothing(tmp_path: Path) -> None:
    """A lone surrogate (an undecodable file name) has no YAML form, escaped or not: escaped,
    the file was written and no later run could read it."""
    baseline = Baseline(tests={"tests_caf\udce9/test_a.py::test_x": {"rss_peak": 1}}, environment=ENV)
    path = tmp_path / "baseline.yaml"
    with pytest.raises(UnicodeError):
        write_atomic(path, dump_baseline(baseline))
    assert not path.exists()


@pytest.mark.parametrize("nodeid", ["'q/test_a.py::test_x", '"q/test_a.py::test_x', "'", "x'y"])
def test_ids_starting_with_a_quote_read_back(nodeid: str, tmp_path: Path) -> None:
    path = tmp_path / "baseline.yaml"
    write_atomic(path, dump_baseline(Baseline(tests={nodeid: {"rss_peak": 1}}, environment=ENV)))
    loaded = load_baseline(path)
    assert loaded is not None
    assert list(loaded.tests) == [nodeid]


def test_missing_file_is_no_baseline(tmp_path: Path) -> None:
    assert load_baseline(tmp_path / "nope.yaml") is None


def test_empty_tests_mapping(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(dump_baseline(Baseline(environment=ENV)))
    assert load_baseline(path) == Baseline(environment=ENV)


def test_merge_keys_read_and_may_be_overridden_but_not_written_twice(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    entries = "  t::a: &d\n    rss_peak: 1\n    rss_retained: 5\n  t::b:\n    <<: *d\n    rss_peak: 3\n"
    path.write_text(f"schema: 1\ntests:\n{entries}")
    baseline = load_baseline(path)
    assert baseline is not None
    assert baseline.tests == {"t::a": {"rss_peak": 1, "rss_retained": 5}, "t::b": {"rss_peak": 3, "rss_retained": 5}}
    path.write_text(f"schema: 1\ntests:\n{entries}    rss_peak: 4\n")
    with pytest.raises(BaselineError, match="duplicate entry 'rss_peak' \\(line 9\\)"):
        load_baseline(path)


@pytest.mark.parametrize(
    ("text", "tests", "environment"),
    [
        # of several merged mappings, the first named wins (YAML's merge key)
        (
            "tests:\n  t::a: &a {rss_peak: 1, rss_retained: 1}\n  t::b: &b {rss_peak: 2, heap_peak: 2}\n"
            "  t::c:\n    <<: [*a, *b]\n",
            {
                "t::a": {"rss_peak": 1, "rss_retained": 1},
                "t::b": {"rss_peak": 2, "heap_peak": 2},
                "t::c": {"rss_peak": 1, "rss_retained": 1, "heap_peak": 2},
            },
            {},
        ),
        ("environment: {<<: {python: 3.10}}\ntests: {}\n", {}, {"python": "3.10"}),
        # only the top-level environment's numbers are text: a test with that name keeps its figures
        ("tests: {environment: {rss_peak: 100}}\n", {"environment": {"rss_peak": 100}}, {}),
    ],
)
def test_merge_keys_and_environment_edge_cases(
    tmp_path: Path, text: str, tests: dict[str, dict[str, int]], environment: dict[str, str]
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(f"schema: 1\n{text}")
    assert load_baseline(path) == Baseline(tests=tests, environment=environment)


@pytest.mark.parametrize("tests", ["tests:\n  t::a:\n    rss_peak: 1\n", "tests: {t::a: {rss_peak: 1}}\n"])
def test_hand_edited_environment_numbers_read_as_written(tmp_path: Path, tests: str) -> None:
    # unquoted, YAML reads 3.10 as the float 3.1: the gate would then report a different Python
    path = tmp_path / "b.yaml"
    path.write_text(f"schema: 1\nenvironment:\n  python: 3.10\n  build: 0100\n  name: CPython\n{tests}")
    baseline = load_baseline(path)
    assert baseline is not None
    assert baseline.environment == {"python": "3.10", "build": "0100", "name": "CPython"}
    assert baseline.tests == {"t::a": {"rss_peak": 1}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("schema: 1\ntests:\n  t: {rss_peak: [\n", "not valid YAML at line"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("schema: 1\ntests: {}\nextra: 1\n", "unknown top-level key\\(s\\) extra"),
        ("schema: two\ntests: {}\n", "'schema' must be a positive whole number"),
        ("schema: 99\ntests: {}\n", "newer pytest-memguard \\(schema 99"),
        ("schema: 1\ntests: [1]\n", "'tests' must map test ids"),
        ("schema: 1\ntests:\n  t::a: 5\n", "test 't::a' must map figures"),
        ("schema: 1\ntests:\n  t::a: {rss_peek: 5}\n", "test 't::a' has unknown figure 'rss_peek'"),
        ("schema: 1\ntests:\n  t::a: {rss_peak: '5 MB'}\n", "rss_peak must be a whole number of bytes, got '5 MB'"),
        ("schema: 1\ntests:\n  t::a: {rss_peak: 1.5}\n", "rss_peak must be a whole number"),
        ("schema: 1\ntests:\n  t::a: {rss_peak: true}\n", "rss_peak must be a whole number"),
        ("schema: 1\ntests:\n  t::a: {rss_peak: -5}\n", "rss_peak cannot be negative"),
        ("schema: 1\ntests:\n  t::a: {rss_peak: 1}\n  t::a: {rss_peak: 2}\n", "duplicate entry 't::a' \\(line 4\\)"),
        ("schema: 1\ntests:\n  t::a: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
        ("schema: 1\ntests:\n  t::a: {<<: {rss_peak: 1, rss_peak: 2}}\n", "duplicate entry 'rss_peak' \\(line 3\\)"),
        ("schema: 1\ntests:\n  t::a: {<<: 5}\n", "'<<' at line 3 must merge a mapping or a list of mappings"),
        ("schema: 1\ntests:\n  ? [a]\n  : {rss_peak: 1}\n", "the key at line 3 is a list"),
    ],
)
def test_bad_baselines_name_file_entry_and_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "baseline.yaml"
    path.write_text(text)
    with pytest.raises(BaselineError, match=message) as excinfo:
        load_baseline(path)
    assert str(path) in str(excinfo.value)


def test_atomic_write_never_leaves_half_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "baseline.yaml"
    path.write_text("old content\n")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new content\n")
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.yaml"]


def test_atomic_write_rewrites_a_symlinks_target_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "base.yaml"
    target.write_text("old")
    link = tmp_path / "memguard-baseline.yaml"
    link.symlink_to(Path("shared") / "base.yaml")
    assert write_atomic(link, "new")
    assert link.is_symlink()
    assert target.read_text() == "new"


def test_atomic_write_skips_identical_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "baseline.yaml"
    assert write_atomic(path, "x\n") is True
    assert write_atomic(path, "x\n") is False
    assert write_atomic(path, "y\n") is True
    assert path.read_text() == "y\n"


# -- comparing, updating, merging --------------------------------------------------
def test_compare_finds_regressions_and_improvements_beyond_tolerance() -> None:
    tolerances = dict(DEFAULTS)
    baseline = {"rss_peak": 10 * MIB, "rss_retained": 0, "heap_peak": 100 * KIB}
    current = {"rss_peak": 12 * MIB, "rss_retained": 100 * KIB, "heap_peak": 90 * KIB}
    findings = compare_figures("t", baseline, current, tolerances)
    assert [(f.figure, f.kind) for f in findings] == [("rss_peak", "regression"), ("heap_peak", "improvement")]
    assert findings[0].message() == "peak RSS 10.0 MiB -> 12.0 MiB (+2.0 MiB, +20%; tolerance 768.0 KiB)"


def test_a_zero_tolerance_finds_any_change_but_not_none() -> None:
    zero = {figure: Tolerance(0.0, 0, 0) for figure in DEFAULTS}
    findings = compare_figures("t", {"rss_peak": 5, "heap_peak": 5}, {"rss_peak": 5, "heap_peak": 6}, zero)
    assert [(f.figure, f.kind) for f in findings] == [("heap_peak", "regression")]


def test_compare_skips_figures_one_side_lacks() -> None:
    assert compare_figures("t", {"heap_peak": 1}, {"rss_peak": 5 * MIB}, dict(DEFAULTS)) == []


def test_update_rewrites_only_what_moved_or_is_new() -> None:
    old = Baseline(tests={"a": {"rss_peak": 100}, "b": {"rss_peak": 200}, "c": {"rss_peak": 300}}, environment=ENV)
    results = [("a", {"rss_peak": 101}, False), ("b", {"rss_peak": 900}, True), ("d", {"rss_peak": 5}, False)]
    new = update_baseline(old, results, ENV)
    assert new.tests == {"a": {"rss_peak": 100}, "b": {"rss_peak": 900}, "c": {"rss_peak": 300}, "d": {"rss_peak": 5}}


def test_update_without_changes_keeps_everything_including_environment() -> None:
    old = Baseline(tests={"a": {"rss_peak": 100}}, environment={"python": "3.10"})
    new = update_baseline(old, [("a", {"rss_peak": 120}, False)], ENV)
    assert new == old


def test_update_adds_newly_measured_figures() -> None:
    old = Baseline(tests={"a": {"rss_peak": 100}}, environment=ENV)
    new = update_baseline(old, [("a", {"rss_peak": 100, "heap_peak": 7}, False)], ENV)
    assert new.tests["a"] == {"rss_peak": 100, "heap_peak": 7}


def test_update_keeps_figures_the_run_did_not_measure() -> None:
    """An update without --memguard-trace keeps the heap figures a traced run recorded."""
    old = Baseline(tests={"a": {"rss_peak": 100, "heap_peak": 7}}, environment=ENV)
    moved = update_baseline(old, [("a", {"rss_peak": 900}, True)], ENV)
    assert moved.tests["a"] == {"rss_peak": 900, "heap_peak": 7}
    still = update_baseline(old, [("a", {"rss_peak": 100}, False)], ENV)
    assert still == old


def test_merge_shards_keeps_the_larger_value_and_names_conflicts() -> None:
    one = Baseline(tests={"a": {"rss_peak": 1}, "b": {"rss_peak": 5}}, environment=ENV)
    two = Baseline(tests={"b": {"rss_peak": 7, "heap_peak": 3}, "c": {"rss_peak": 2}}, environment=ENV)
    merged, conflicts = merge_baselines([one, two])
    assert merged.tests == {"a": {"rss_peak": 1}, "b": {"rss_peak": 7, "heap_peak": 3}, "c": {"rss_peak": 2}}
    assert conflicts == ["b"]
    assert merged.environment == ENV


def test_lowest_takes_each_figure_separately() -> None:
    runs = [Measurement(10, 5, None, None, 1), Measurement(8, 7, None, None, 0), Measurement(9, -1, None, None, 2)]
    assert lowest(runs) == Measurement(8, -1, None, None, 0)


# -- two runs updating one baseline ----------------------------------------------------------
def _record(nodeid: str, peak: int) -> MemoryRecord:
    return MemoryRecord(nodeid, Measurement(peak, 0, None, None, 0))


def test_an_update_keeps_the_entries_another_run_wrote_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    write_atomic(path, dump_baseline(Baseline(tests={"t::a": {"rss_peak": 1}}, environment=ENV)))
    gate = BaselineGate.load(path, default_policy())
    # another run, started at the same time, updates the file first
    write_atomic(
        path, dump_baseline(Baseline(tests={"t::a": {"rss_peak": 1}, "t::o": {"rss_peak": 7}}, environment=ENV))
    )
    result = gate.finish([_record("t::b", 5 * MIB)], update=True)
    assert result.written == path
    assert result.changed_entries == 1
    loaded = load_baseline(path)
    assert loaded is not None
    assert loaded.tests == {
        "t::a": {"rss_peak": 1},
        "t::o": {"rss_peak": 7},
        "t::b": {"rss_peak": 5 * MIB, "rss_retained": 0},
    }


def test_a_baseline_made_unreadable_during_the_run_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    write_atomic(path, dump_baseline(Baseline(tests={"t::a": {"rss_peak": 1}}, environment=ENV)))
    gate = BaselineGate.load(path, default_policy())
    path.write_text("tests: [half an edit\n")
    result = gate.finish([_record("t::b", 5 * MIB)], update=True)
    assert result.write_failed
    assert result.written is None
    assert "changed during this run and no longer reads" in result.held
    assert path.read_text() == "tests: [half an edit\n"


@pytest.mark.parametrize("name", ["b.yaml", "new/sub/b.yaml"])  # a new baseline's folder is made, then locked
def test_an_update_holds_a_lock_others_wait_for(tmp_path: Path, name: str) -> None:
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / name
    with locked_for_update(path):
        other = os.open(path.parent, os.O_RDONLY)  # another open of the folder: as another process would
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    other = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(other)

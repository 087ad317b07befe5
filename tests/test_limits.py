from __future__ import annotations

import pytest

from pytest_memguard.limits import (
    Limit,
    LimitError,
    check_limits,
    merge_limits,
    parse_limit_lines,
    parse_limits,
)
from pytest_memguard.tracker import Measurement

MIB = 1024**2


def measurement(**figures: int | None) -> Measurement:
    base: dict[str, int | None] = {
        "rss_peak": 0,
        "rss_retained": 0,
        "heap_peak": None,
        "heap_retained": None,
        "fds_gained": 0,
    }
    base.update(figures)
    return Measurement(**base)  # type: ignore[arg-type]


def test_parse_limits_keeps_source_and_spelling() -> None:
    limits = parse_limits({"peak": "50 MB", "retained": 1024, "fds": 0}, "somewhere")
    assert limits["peak"] == Limit("peak", 50_000_000, "somewhere", "50 MB")
    assert limits["retained"] == Limit("retained", 1024, "somewhere", "1024")
    assert limits["fds"] == Limit("fds", 0, "somewhere", "0")


def test_none_means_no_limit_here() -> None:
    assert parse_limits({"peak": None}, "x") == {"peak": None}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"peak": "fifty"}, "peak='fifty'"),
        ({"retained": "10 parsecs"}, "unknown unit 'parsecs'"),
        ({"peak": "-5 MB"}, "cannot be negative"),
        ({"peek": "5 MB"}, "unknown keyword peek"),
        ({"fds": "lots"}, "fds='lots' is not a whole number"),
        ({"fds": -1}, "fds=-1"),
        ({"fds": True}, "fds=True"),
    ],
)
def test_bad_limits_say_what_and_how(values: dict[str, object], message: str) -> None:
    with pytest.raises(LimitError) as excinfo:
        parse_limits(values, "x")
    assert message in str(excinfo.value)


def test_unknown_keyword_lists_known_ones() -> None:
    with pytest.raises(LimitError, match="known: peak, retained, heap_peak, heap_retained, fds"):
        parse_limits({"rss": 1}, "x")


def test_parse_limit_lines() -> None:
    limits = parse_limit_lines(["peak = 500 MB", "fds=2"], "ini")
    assert limits["peak"] is not None
    assert limits["peak"].value == 500_000_000
    assert limits["fds"] is not None
    assert limits["fds"].value == 2


@pytest.mark.parametrize("line", ["peak", "peak=", "=5 MB", "peak 5 MB"])
def test_parse_limit_lines_rejects_malformed(line: str) -> None:
    with pytest.raises(LimitError, match="is not KEY=VALUE"):
        parse_limit_lines([line], "ini")


def test_merge_nearest_wins_and_none_removes() -> None:
    function = parse_limits({"peak": "1 MiB", "retained": None}, "function")
    klass = parse_limits({"peak": "2 MiB", "retained": "3 MiB", "fds": 0}, "class")
    merged = merge_limits([function, klass])
    assert merged["peak"].source == "function"
    assert "retained" not in merged
    assert merged["fds"].source == "class"


def test_check_limits_reports_each_breach_readably() -> None:
    limits = merge_limits(
        [parse_limits({"peak": "50 MB", "retained": "1 MiB", "fds": 0}, "@pytest.mark.memguard on t")]
    )
    breaches = check_limits(measurement(rss_peak=80 * MIB, rss_retained=MIB, fds_gained=2), limits)
    assert [b.limit.key for b in breaches] == ["peak", "fds"]
    assert breaches[0].message() == (
        "peak RSS 80.0 MiB exceeds the limit of 50 MB (47.7 MiB) by 32.3 MiB (limit from @pytest.mark.memguard on t)"
    )
    assert breaches[1].message() == (
        "file descriptors gained 2 exceeds the limit of 0 by 2 (limit from @pytest.mark.memguard on t)"
    )


def test_limit_at_exactly_the_value_passes() -> None:
    limits = merge_limits([parse_limits({"peak": MIB}, "x")])
    assert check_limits(measurement(rss_peak=MIB), limits) == []


def test_unmeasured_heap_figure_is_not_a_breach() -> None:
    limits = merge_limits([parse_limits({"heap_peak": "1 KiB"}, "x")])
    assert check_limits(measurement(heap_peak=None), limits) == []
    assert len(check_limits(measurement(heap_peak=4096), limits)) == 1

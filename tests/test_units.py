from __future__ import annotations

import pytest

from pytest_memguard.units import SizeError, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1048576, 1048576),
        ("512", 512),
        ("512 B", 512),
        ("1 KB", 1000),
        ("1kB", 1000),
        ("50 MB", 50_000_000),
        ("50mb", 50_000_000),
        ("1 GB", 1_000_000_000),
        ("1 KiB", 1024),
        ("512KiB", 512 * 1024),
        ("1.5 MiB", 1536 * 1024),
        ("2 gib", 2 * 1024**3),
        ("1 TiB", 1024**4),
        ("  7 MiB  ", 7 * 1024**2),
        (".5 KiB", 512),
        (2.5, 2),
    ],
)
def test_parse_size_accepts_both_conventions(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("fifty", "not a size"),
        ("10 parsecs", "unknown unit 'parsecs'"),
        ("50 M", "unknown unit 'M'"),
        ("-5 MB", "cannot be negative"),
        (-1, "cannot be negative"),
        ("", "not a size"),
        (True, "not a size"),
        (None, "not a size"),
        ([1], "not a size"),
        (float("nan"), "not a finite size"),
        ("1e999 MB", "not a finite size"),
    ],
)
def test_parse_size_rejects_with_a_useful_message(bad: object, hint: str) -> None:
    with pytest.raises(SizeError) as excinfo:
        parse_size(bad)
    assert hint in str(excinfo.value)


def test_parse_size_lists_accepted_units() -> None:
    with pytest.raises(SizeError) as excinfo:
        parse_size("3 furlongs")
    assert "KiB" in str(excinfo.value)
    assert "MB" in str(excinfo.value)


def test_negative_sizes_allowed_when_asked() -> None:
    assert parse_size("-1 KiB", allow_negative=True) == -1024


@pytest.mark.parametrize(
    ("num", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (50 * 1024**2, "50.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2 * 1024**4, "2.0 TiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_format_size_uses_binary_units(num: int, text: str) -> None:
    assert format_size(num) == text


def test_format_size_signed() -> None:
    assert format_size(2048, signed=True) == "+2.0 KiB"
    assert format_size(0, signed=True) == "0 B"
    assert format_size(-5, signed=True) == "-5 B"


def test_round_trip_of_formatted_sizes() -> None:
    for num in (1, 999, 4096, 10 * 1024**2):
        assert abs(parse_size(format_size(num)) - num) <= num * 0.001 + 1

"""Shared helpers for pytest-memguard's own tests."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """``{test name: {property: value}}`` from a JUnit XML file written by ``--junitxml``."""
    found: dict[str, dict[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        found[case.get("name", "")] = {prop.get("name", ""): prop.get("value", "") for prop in case.iter("property")}
    return found


@pytest.fixture
def run_measured(pytester: pytest.Pytester):
    """Run pytest in a subprocess (memory and tracemalloc are process state) with --junitxml;
    return the result and the memguard properties per test name."""

    def run(*args: str) -> tuple[pytest.RunResult, dict[str, dict[str, str]]]:
        xml = pytester.path / "junit.xml"
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--junitxml={xml}", *args)
        return result, (junit_properties(xml) if xml.exists() else {})

    return run


@pytest.fixture(autouse=True)
def _no_job_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions run by these tests must not append to a real GitHub job summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(autouse=True)
def _without_hypothesis_plugin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions run by these tests leave hypothesis' pytest plugin out: it costs ~1.1 s a start,
    which tripled the suite's time. Tests marked ``with_hypothesis_plugin`` keep it, to see
    that it and memguard get along (it once broke the gate's summary, and showed in sites)."""
    if "pytester" not in request.fixturenames:
        return  # runs no session (and the corpora the benchmarks run must stay untouched)
    request.getfixturevalue("pytester")  # it empties PYTEST_ADDOPTS as it sets up: set it after
    if request.node.get_closest_marker("with_hypothesis_plugin") is None:
        addopts = f"{os.environ.get('PYTEST_ADDOPTS', '')} -p no:hypothesispytest".strip()
        monkeypatch.setenv("PYTEST_ADDOPTS", addopts)

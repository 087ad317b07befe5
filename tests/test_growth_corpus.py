"""The gate on the growth corpus (v1 -> v2): every >= 20% or >= 1 MiB regression caught, no false alarm.

benchmarks/gate_corpus.py scores the full matrix (tracing, xdist, repeated runs); this is its smoke test.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus" / "growth_suite.py"


def verdicts(pytester: pytest.Pytester, version: str, *args: str) -> dict[str, str]:
    pytester._monkeypatch.setenv("MEMGUARD_CORPUS", version)  # type: ignore[attr-defined]
    pytester.runpytest_subprocess(
        "--memguard", "--memguard-leaks=off", "--memguard-json=r.json", "growth_suite.py", *args
    )
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    return {nodeid.split("::", 1)[1]: entry["verdict"] for nodeid, entry in tests.items()}


def test_v2_regressions_caught_without_false_alarms(pytester: pytest.Pytester) -> None:
    shutil.copy(CORPUS, pytester.path / "growth_suite.py")
    verdicts(pytester, "v1", "--memguard-update-baseline")
    found = verdicts(pytester, "v2")
    must = {name for name in found if name.startswith("test_regress[") and not name.startswith("test_regress[x1.05")}
    caught = {name for name, verdict in found.items() if verdict == "regression"}
    assert len(must) == 20
    assert must <= caught
    assert not {name for name in caught if not re.match(r"test_regress\[", name)}
    again = verdicts(pytester, "v1")
    assert "regression" not in again.values()

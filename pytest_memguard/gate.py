"""The regression gate: one test against the baseline, and the whole run at the end.

Pure (no pytest) so ``memguard compare`` outside pytest uses the very same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Mapping, Optional, Sequence

from .baseline import (
    Baseline,
    BaselineError,
    Finding,
    compare_figures,
    current_environment,
    dump_baseline,
    load_baseline,
    locked_for_update,
    update_baseline,
    write_atomic,
)
from .record import MemoryRecord, Verdict, figures_of
from .tolerance import Tolerance, TolerancePolicy
from .tracker import Measurement

__all__ = ["BaselineGate", "GateResult", "lowest"]


def lowest(measurements: Sequence[Measurement]) -> Measurement:
    """Figure by figure, the lowest of several runs: noise only ever adds memory."""

    def low(values: Iterable[Optional[int]]) -> Optional[int]:
        present = [value for value in values if value is not None]
        return min(present) if present else None

    columns = list(zip(*measurements))
    return Measurement(*(low(column) for column in columns))  # type: ignore[arg-type]


def verdict_for(findings: Sequence[Finding], in_baseline: bool) -> str:
    """The word for ``memguard_verdict`` from baseline findings (limits are judged elsewhere)."""
    if any(f.kind == "regression" for f in findings):
        return Verdict.REGRESSION
    if findings:
        return Verdict.IMPROVEMENT
    return Verdict.OK if in_baseline else Verdict.NEW


@dataclass
class GateResult:
    """What the run amounts to against the baseline."""

    regressions: list[MemoryRecord] = field(default_factory=list)
    improvements: list[MemoryRecord] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    environment_note: str = ""
    written: Optional[Path] = None
    changed_entries: int = 0
    held: str = ""  # why an asked-for baseline update was not made (a run that stopped early)
    write_failed: bool = False  # the update was made but could not be written: the run fails
    unrecorded: list[str] = field(default_factory=list)  # tests an update left out: they did not pass

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


class BaselineGate:
    """Holds the loaded baseline and the tolerance policy; judges tests and the run."""

    def __init__(self, path: Path, baseline: Optional[Baseline], policy: TolerancePolicy) -> None:
        self.path = path
        self.baseline = baseline
        self.policy = policy
        self.environment = current_environment()

    @classmethod
    def load(cls, path: Path, policy: TolerancePolicy) -> BaselineGate:
        """Raises :class:`~pytest_memguard.baseline.BaselineError` for a file that cannot be used."""
        return cls(path, load_baseline(path), policy)

    def entry(self, nodeid: str) -> Optional[Mapping[str, int]]:
        return None if self.baseline is None else self.baseline.tests.get(nodeid)

    def compare(
        self, nodeid: str, measurement: Measurement, marker: Optional[Mapping[str, Tolerance]] = None
    ) -> list[Finding]:
        entry = self.entry(nodeid)
        if entry is None:
            return []
        return compare_figures(nodeid, entry, figures_of(measurement), self.policy.for_test(nodeid, marker))

    def finish(self, records: Sequence[MemoryRecord], *, update: bool, partial: Collection[str] = ()) -> GateResult:
        """Sort records into regressions, improvements and new tests; write the baseline if asked.
        ``partial``: tests that did not pass on their own (failed, errored, skipped or xfailed,
        before memguard's verdict), which an update leaves out: a run cut short is not what the
        test uses, and recorded, it would make the mended test read as a regression. Their
        entries, if any, stay, and they are not listed as not run. (A test memguard failed, over
        a limit or leaking, passed on its own: recorded.)"""
        result = GateResult()
        for record in sorted(records, key=lambda r: r.nodeid):
            if any(f.kind == "regression" for f in record.findings):
                result.regressions.append(record)
            elif record.findings:
                result.improvements.append(record)
            if self.entry(record.nodeid) is None:
                result.new.append(record.nodeid)
        if self.baseline is not None:
            ran = {record.nodeid for record in records}.union(partial)  # those ran too, cut short
            result.not_run = sorted(set(self.baseline.tests) - ran)
            result.environment_note = self._environment_note()
        if update:
            result.unrecorded = sorted({record.nodeid for record in records}.intersection(partial))
            self._update([record for record in records if record.nodeid not in partial], result)
        return result

    def _environment_note(self) -> str:
        assert self.baseline is not None
        # keys only a hand-edited file has are left out: shown side by side, they read as equal
        recorded = {key: value for key, value in self.baseline.environment.items() if key in self.environment}
        if not recorded or recorded == self.environment:
            return ""

        def show(env: Mapping[str, str]) -> str:
            return " ".join(f"{key}={env.get(key, '?')}" for key in sorted(self.environment))

        return (
            f"the baseline was recorded on {show(recorded)}, this run is {show(self.environment)}: "
            "RSS figures may differ for that reason alone"
        )

    def _update(self, records: Sequence[MemoryRecord], result: GateResult) -> None:
        """Write this run's results into the baseline as the file is now: another run may have
        updated it since this one loaded it, and its entries stay (the file is read, updated
        and written under :func:`~pytest_memguard.baseline.locked_for_update`)."""
        results = [(r.nodeid, figures_of(r.measurement), bool(r.findings)) for r in records]
        try:
            with locked_for_update(self.path):
                try:
                    current = load_baseline(self.path)
                except BaselineError as exc:  # changed under this run into something unreadable: keep it
                    result.held = f"it changed during this run and no longer reads, so it was left as it is ({exc})"
                    result.write_failed = True
                    return
                updated = update_baseline(current, results, self.environment)
                before = {} if current is None else current.tests
                result.changed_entries = sum(
                    1 for nodeid, figures in updated.tests.items() if before.get(nodeid) != figures
                )
                if write_atomic(self.path, dump_baseline(updated)):
                    result.written = self.path
        except (OSError, UnicodeError) as exc:  # an unwritable place: said, and the run fails
            result.held = f"could not write it: {exc}"
            result.write_failed = True
            return
        self.baseline = updated

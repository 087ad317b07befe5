"""Sample data shared by the report tests (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

from pytest_memguard.allocation_analyzer import AllocationAnalysis, GroupTotal, SiteStat

KIB = 1024
MIB = 1024 * KIB


def analysis_of(text: str) -> AllocationAnalysis:
    """An analysis whose paths, package and advice all carry ``text`` (as a hostile path would)."""
    site = SiteStat(f"{text}.py:4 <- {text}.py:9", f"/src/{text}.py", 4, text, 30 * MIB, 2)
    return AllocationAnalysis(
        retained_bytes=4 * KIB,
        retained_blocks=30,
        allocated_bytes=5 * KIB,
        allocated_blocks=36,
        freed_bytes=KIB,
        freed_blocks=6,
        traced_bytes=64 * KIB,
        peak_bytes=30 * MIB,
        rss_bytes=None,
        fragmentation=None,
        efficiency=1.0,
        top_by_size=(site,),
        top_by_count=(site,),
        by_component=(GroupTotal(text, 4 * KIB, 30),),
        by_operation=(GroupTotal(f"fixture {text}", 3 * KIB, 20), GroupTotal("<other>", KIB, 10)),
        size_classes=(GroupTotal("tiny", 436, 11), GroupTotal("huge", 0, 0)),
        recommendations=(f"one 30.0 MiB allocation at {text}.py:4", f"most retained memory (99%) comes from {text}"),
        stack_depth=2,
        exact_sizes=True,
        peak_sites=(site,),
        peak_snapshot_bytes=30 * MIB,
        peak_by_operation=(GroupTotal(f"test_{text}", 30 * MIB, 2),),
        operations_labelled=True,
    )

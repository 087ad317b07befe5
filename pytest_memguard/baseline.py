"""The YAML baseline users commit: load (safely), validate, compare, update, merge, write atomically.

No pytest here. The file is meant to be reviewed like code::

    # pytest-memguard baseline. ...
    schema: 1
    environment:
      implementation: CPython
      platform: linux-x86_64
      python: '3.11'
    tests:
      tests/test_io.py::test_load:
        rss_peak: 52428800
        rss_retained: 0

Keys are sorted, one test per entry, integers in bytes, so a diff shows exactly
which test moved. Writing goes through a temporary file and a rename: a crash or
Ctrl-C never leaves half a baseline behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

import yaml

from .tolerance import FIGURES, Tolerance
from .units import format_size

__all__ = [
    "SCHEMA_VERSION",
    "Baseline",
    "BaselineError",
    "Finding",
    "compare_figures",
    "current_environment",
    "dump_baseline",
    "load_baseline",
    "locked_for_update",
    "merge_baselines",
    "update_baseline",
    "write_atomic",
]

SCHEMA_VERSION = 1
_HEADER = (
    "# pytest-memguard baseline: per-test memory in bytes. Review changes like code.\n"
    "# Refresh with: pytest --memguard --memguard-update-baseline\n"
)
_TOP_KEYS = {"schema", "environment", "tests"}
_FIX = "fix it by hand, or delete it and run pytest --memguard --memguard-update-baseline"

PathLike = Union[str, "os.PathLike[str]"]


class BaselineError(ValueError):
    """A baseline that cannot be used; the message names the file, the entry and the fix."""


@dataclass
class Baseline:
    """Per-test figures (``{nodeid: {figure: bytes}}``) and where they were recorded."""

    tests: dict[str, dict[str, int]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Finding:
    """One figure of one test that moved beyond its tolerance."""

    nodeid: str
    figure: str
    baseline: int
    current: int
    threshold: int

    @property
    def kind(self) -> str:
        return "regression" if self.current > self.baseline else "improvement"

    @property
    def change(self) -> int:
        return self.current - self.baseline

    def describe_change(self) -> str:
        relative = f", {self.change / self.baseline:+.0%}" if self.baseline > 0 else ""
        return f"{format_size(self.change, signed=True)}{relative}"

    def message(self) -> str:
        return (
            f"{FIGURES[self.figure]} {format_size(self.baseline)} -> {format_size(self.current)} "
            f"({self.describe_change()}; tolerance {format_size(self.threshold)})"
        )


def current_environment() -> dict[str, str]:
    """Where figures are measured; a different one is reported, not treated as an error."""
    return {
        "implementation": platform.python_implementation(),
        "platform": f"{sys.platform}-{platform.machine() or 'unknown'}",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


# -- reading ------------------------------------------------------------------
# libyaml's parser and emitter are ~20x faster than PyYAML's pure-Python ones
# (50,000 tests: load 19 s -> <1 s); they ship in PyYAML's wheels, with a fallback.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """Safe loading that refuses duplicate keys (PyYAML silently keeps the last one), reads YAML's
    merge keys (``<<: *anchor``) itself, and reads the environment's numbers as written."""

    def construct_document(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.tag == _STR_TAG and key_node.value == "environment":
                    _numbers_as_written(value_node)
        return super().construct_document(node)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    merged: dict[Any, Any] = {}
    own: dict[Any, Any] = {}  # keys written in this mapping itself: they override merged ones
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            # <<: *a or <<: [*a, *b]: of those, the first named wins (YAML's merge key); each
            # source is a mapping constructed (and checked for duplicates) on its own
            for source in reversed(_merge_sources(key_node, value_node)):
                merged.update(loader.construct_object(source, deep=deep))
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            written_twice = key in own
        except TypeError:  # a list or a mapping as a key (YAML's "? [a, b]")
            raise BaselineError(
                f"the key at line {line} is a {type(key).__name__}; keys are names or test ids"
            ) from None
        if written_twice:
            raise BaselineError(f"duplicate entry {key!r} (line {line}); keep one of them")
        own[key] = loader.construct_object(value_node, deep=deep)
    return {**merged, **own}


def _merge_sources(key_node: yaml.Node, value_node: yaml.Node) -> list[yaml.MappingNode]:
    if isinstance(value_node, yaml.MappingNode):
        return [value_node]
    if isinstance(value_node, yaml.SequenceNode) and all(isinstance(n, yaml.MappingNode) for n in value_node.value):
        return list(value_node.value)
    line = key_node.start_mark.line + 1
    raise BaselineError(f"'<<' at line {line} must merge a mapping or a list of mappings")


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _numbers_as_written(environment: yaml.Node) -> None:
    """Read the environment's numbers (merged ones too) as the text written: a hand-edited,
    unquoted ``python: 3.10`` is the float 3.1 to YAML, and would then be reported as a different
    Python."""
    if not isinstance(environment, yaml.MappingNode):
        return
    for key_node, value_node in environment.value:
        if key_node.tag == _MERGE_TAG:
            for source in _merge_sources(key_node, value_node):
                _numbers_as_written(source)
        elif isinstance(value_node, yaml.ScalarNode) and value_node.tag in _NUMBER_TAGS:
            value_node.tag = _STR_TAG


def load_baseline(path: PathLike) -> Optional[Baseline]:
    """Read and validate a baseline; ``None`` if there is no file yet."""
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{where}: cannot be read ({exc})") from None
    try:
        data = _load_canonical(text)
        if data is None:
            data = yaml.load(text, Loader=_StrictLoader)
    except BaselineError as exc:
        raise BaselineError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise BaselineError(f"{where}: not valid YAML{line} ({getattr(exc, 'problem', exc)}); {_FIX}") from None
    return validate_baseline(data, where)


_KEY_LINE = re.compile(r"^  (?P<key>\S.*):$")
# No leading zeros: YAML 1.1 reads "0100" as octal, so such a file goes through YAML.
_FIGURE_LINE = re.compile(r"^    (?P<name>[a-z_]+): (?P<value>0|-?[1-9][0-9]*)$")
_STR_TAG = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()


def _load_canonical(text: str) -> Optional[dict[str, Any]]:
    """Fast path for the layout :func:`dump_baseline` writes: the ``tests`` block read line
    by line (YAML construction in Python takes seconds for 50,000 tests). Anything it
    does not recognise returns ``None`` and the file goes through the YAML loader."""
    head, marker, block = text.partition("\ntests:\n")
    if not marker:
        return None
    data = yaml.load(head + "\ntests: {}\n", Loader=_StrictLoader)
    if not isinstance(data, dict):
        return None
    tests: dict[str, dict[str, int]] = {}
    current: Optional[dict[str, int]] = None
    for line in block.splitlines():
        figure = _FIGURE_LINE.match(line)
        if figure is not None:
            if current is None or figure["name"] in current:
                return None
            current[figure["name"]] = int(figure["value"])
            continue
        entry = _KEY_LINE.match(line)
        if entry is None:
            if line.strip():
                return None
            continue
        key = _plain_key(entry["key"])
        if key is None or key in tests:
            return None
        current = tests[key] = {}
    data["tests"] = tests
    return data


def _plain_key(text: str) -> Optional[str]:
    """The string a mapping key stands for, if it is one the fast path can read exactly."""
    if text[0] in "'\"":
        try:
            value = yaml.load(text, Loader=_StrictLoader)
        except yaml.YAMLError:  # an id that only starts with a quote: written quoted
            return None
        return value if isinstance(value, str) else None
    if text[0] in "!&*[]{}|>%@`#,?-:" or ": " in text or " #" in text or text != text.strip():
        return None
    if _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) != _STR_TAG:  # type: ignore[no-untyped-call]
        return None
    return text


def validate_baseline(data: object, where: str) -> Baseline:
    """Check a parsed baseline's shape and values, naming the entry at fault."""
    if data is None:
        raise BaselineError(f"{where}: the file is empty; {_FIX}")
    if not isinstance(data, dict):
        raise BaselineError(f"{where}: expected a mapping with schema, environment and tests; {_FIX}")
    unknown = sorted(map(str, set(data) - _TOP_KEYS))
    if unknown:
        raise BaselineError(f"{where}: unknown top-level key(s) {', '.join(unknown)}; expected {sorted(_TOP_KEYS)}")
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise BaselineError(f"{where}: 'schema' must be a positive whole number, got {schema!r}; {_FIX}")
    if schema > SCHEMA_VERSION:
        raise BaselineError(
            f"{where}: written by a newer pytest-memguard (schema {schema}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade pytest-memguard"
        )
    environment = data.get("environment") or {}
    if not isinstance(environment, dict) or not all(isinstance(v, (str, int, float)) for v in environment.values()):
        raise BaselineError(f"{where}: 'environment' must map names to plain values")
    tests_data = data.get("tests") or {}
    if not isinstance(tests_data, dict):
        raise BaselineError(f"{where}: 'tests' must map test ids to figures; {_FIX}")
    tests: dict[str, dict[str, int]] = {}
    for nodeid, figures in tests_data.items():
        tests[str(nodeid)] = _validate_entry(where, str(nodeid), figures)
    return Baseline(tests=tests, environment={str(k): str(v) for k, v in environment.items()}, schema=schema)


def _validate_entry(where: str, nodeid: str, figures: object) -> dict[str, int]:
    if not isinstance(figures, dict) or not figures:
        raise BaselineError(f"{where}: test {nodeid!r} must map figures ({', '.join(FIGURES)}) to bytes")
    entry: dict[str, int] = {}
    for name, value in figures.items():
        if name not in FIGURES:
            raise BaselineError(f"{where}: test {nodeid!r} has unknown figure {name!r}; known: {', '.join(FIGURES)}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise BaselineError(f"{where}: test {nodeid!r}: {name} must be a whole number of bytes, got {value!r}")
        if value < 0 and name.endswith("_peak"):
            raise BaselineError(f"{where}: test {nodeid!r}: {name} cannot be negative, got {value}")
        entry[str(name)] = value
    return entry


# -- writing ------------------------------------------------------------------
def dump_baseline(baseline: Baseline) -> str:
    """Stable text: the same baseline always gives the same bytes.

    The ``tests`` block is written line by line in the layout :func:`_load_canonical`
    reads fast (PyYAML's emitter takes seconds for 50,000 tests); keys that are not
    plain YAML scalars are double-quoted (JSON escapes are valid YAML)."""
    head = yaml.dump(
        {"environment": baseline.environment},
        Dumper=_SafeDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )
    lines = [_HEADER + f"schema: {baseline.schema}\n" + head + ("tests:" if baseline.tests else "tests: {}")]
    for nodeid, figures in sorted(baseline.tests.items()):
        lines.append(f"  {_written_key(nodeid)}:")
        lines += [f"    {name}: {int(value)}" for name, value in sorted(figures.items())]
    return "\n".join(lines) + "\n"


# Characters a key may hold as they are: printable to YAML (its reader refuses DEL, C1 controls,
# U+FFFE/U+FFFF) and not a line break to YAML or str.splitlines (NEL, U+2028, U+2029), which
# would split or fold the key. Written raw, such a key made a file we could not read back; they
# are escaped (\uXXXX, valid in a double-quoted YAML string). Lone surrogates (an undecodable
# file name) have no YAML form, escaped or not: left as they are, writing the file fails and
# says so, rather than writing one no later run can read.
_UNSAFE_IN_KEY = re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def _written_key(nodeid: str) -> str:
    """``nodeid`` as the ``tests`` block writes it: plain where :func:`_plain_key` reads it back
    exactly, else double-quoted with JSON's escapes and every character YAML or a line split
    could misread escaped."""
    if nodeid and _plain_key(nodeid) == nodeid and not _UNSAFE_IN_KEY.search(nodeid):
        return nodeid
    quoted = json.dumps(nodeid, ensure_ascii=False)
    return _UNSAFE_IN_KEY.sub(lambda char: f"\\u{ord(char[0]):04x}", quoted)


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def locked_for_update(path: PathLike) -> Iterator[None]:
    """Hold an exclusive lock for reading, updating and writing the baseline at ``path``, so two
    runs updating it at once (two CI jobs in one checkout) do not write over each other's
    entries. The lock is on the file's folder (``flock``): the rename that writes the file
    replaces the file itself, and a lock file beside it would be one more file in the user's
    repository. Where ``flock`` is not there (Windows) or the folder cannot be opened, nothing is
    locked: the update is still atomic, only not serialised."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(os.path.realpath(os.fspath(path))).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)  # a new baseline's: made here so it is locked too
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # not readable, or not ours to make (write_atomic will say why)
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without locks (some network mounts)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def write_atomic(path: PathLike, text: str) -> bool:
    """Write ``text`` via a temporary file and a rename; ``False`` if the file already says exactly that.
    A symbolic link is followed: its target is rewritten, the link stays."""
    target = Path(os.path.realpath(os.fspath(path)))
    try:
        if target.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary: Optional[str] = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as handle:
            temporary = handle.name
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _mode_for(target))  # a temporary file is 0600; keep the file's own mode
        os.replace(temporary, target)
    except BaseException:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise
    return True


# -- comparing and updating ---------------------------------------------------
def compare_figures(
    nodeid: str,
    baseline: Mapping[str, int],
    current: Mapping[str, int],
    tolerances: Mapping[str, Tolerance],
) -> list[Finding]:
    """Every figure both sides have that moved by at least its tolerance."""
    findings = []
    for figure in FIGURES:
        if figure not in baseline or figure not in current:
            continue
        before, now = baseline[figure], current[figure]
        threshold = tolerances[figure].threshold(before)
        if now != before and abs(now - before) >= threshold:  # a 0 tolerance: any change, not none
            findings.append(Finding(nodeid, figure, before, now, threshold))
    return findings


def update_baseline(
    baseline: Optional[Baseline],
    results: Iterable[tuple[str, Mapping[str, int], bool]],
    environment: Mapping[str, str],
) -> Baseline:
    """Take in ``(nodeid, figures, moved)`` results; entries not in ``results`` stay as they were.

    An existing entry is rewritten only when it moved beyond tolerance or gained a figure,
    so re-running without changes rewrites nothing. Figures a run did not measure (the
    Python heap's, without ``--memguard-trace``) keep their recorded values: an update
    without tracing dropped them, and later traced runs had nothing to compare.
    """
    old = baseline or Baseline(environment=dict(environment))
    tests = {nodeid: dict(figures) for nodeid, figures in old.tests.items()}
    changed = False
    for nodeid, figures, moved in results:
        entry = tests.get(nodeid)
        wanted = entry is None or moved or not set(figures) <= set(entry)
        updated = {**(entry or {}), **figures}
        if wanted and entry != updated:
            tests[nodeid] = updated
            changed = True
    env = dict(environment) if changed or baseline is None else dict(old.environment)
    return Baseline(tests=tests, environment=env, schema=SCHEMA_VERSION)


def merge_baselines(baselines: Iterable[Baseline]) -> tuple[Baseline, list[str]]:
    """Union of shards' baselines. A test in several keeps the larger value of each figure
    (the cautious choice); its id is returned so the caller can say so."""
    tests: dict[str, dict[str, int]] = {}
    conflicts: list[str] = []
    environment: dict[str, str] = {}
    for baseline in baselines:
        environment = environment or dict(baseline.environment)
        for nodeid, figures in baseline.tests.items():
            if nodeid in tests:
                if tests[nodeid] != figures:
                    conflicts.append(nodeid)
                merged = dict(tests[nodeid])
                for name, value in figures.items():
                    merged[name] = max(value, merged.get(name, value))
                tests[nodeid] = merged
            else:
                tests[nodeid] = dict(figures)
    return Baseline(tests=tests, environment=environment), sorted(set(conflicts))

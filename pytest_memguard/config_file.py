"""The optional YAML config file (``--memguard-config``): tolerances and per-test rules. No pytest.

::

    tolerance:            # defaults for every test, per figure (all, rss, heap, rss_peak, ...)
      rss: 15%
      heap_peak: 5% floor=8KiB
    rules:                # later rules win; globs match the test's node id
      - match: "tests/integration/*"
        tolerance:
          rss: 30% absolute=4MiB
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import yaml

from .tolerance import Tolerance, ToleranceError, TolerancePolicy, ToleranceRule, parse_figure_tolerances

__all__ = ["ConfigFileError", "load_config_file"]

_TOP_KEYS = {"tolerance", "rules"}


class ConfigFileError(ValueError):
    """A config file that cannot be used; the message names the file and the entry."""


def load_config_file(path: Union[str, os.PathLike[str]], base: TolerancePolicy) -> TolerancePolicy:
    """Apply the file's tolerances and rules on top of ``base``."""
    where = os.fspath(path)
    try:
        data = yaml.safe_load(Path(where).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"config file {where} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"config file {where} cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"config file {where} is not valid YAML ({exc})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {where}: expected a mapping with 'tolerance' and/or 'rules'")
    unknown = sorted(map(str, set(data) - _TOP_KEYS))
    if unknown:
        raise ConfigFileError(f"config file {where}: unknown key(s) {', '.join(unknown)}; expected tolerance, rules")
    if not isinstance(data.get("rules") or [], list):
        raise ConfigFileError(f"config file {where}: 'rules' must be a list of {{match: GLOB, tolerance: ...}}")
    try:
        defaults = dict(base.defaults)
        defaults.update(_tolerances(data.get("tolerance"), defaults, f"{where}: tolerance"))
        rules = list(base.rules)
        for index, rule in enumerate(data.get("rules") or [], start=1):
            rules.append(_rule(rule, defaults, f"{where}: rules[{index}]"))
    except ToleranceError as exc:
        raise ConfigFileError(str(exc)) from None
    return TolerancePolicy(defaults, tuple(rules))


def _tolerances(value: object, base: Mapping[str, Tolerance], where: str) -> dict[str, Tolerance]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ToleranceError(f"{where}: expected a mapping of figure to tolerance, e.g. {{rss: 15%}}")
    return parse_figure_tolerances(value, base, where)


def _rule(rule: object, defaults: Mapping[str, Tolerance], where: str) -> ToleranceRule:
    if not isinstance(rule, dict) or not isinstance(rule.get("match"), str) or set(rule) - {"match", "tolerance"}:
        raise ToleranceError(f"{where}: expected {{match: GLOB, tolerance: {{FIGURE: SPEC}}}}")
    return ToleranceRule(rule["match"], _tolerances(rule.get("tolerance"), defaults, where))

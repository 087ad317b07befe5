"""Untrusted text (test ids, parameter values, paths) made safe for each output format. No pytest.

A test id is whatever the user's parametrization made of it: ``|``, backticks,
``<script>``, ``-->``, newlines, control characters and lone surrogates all occur.

* Markdown (GitHub-flavoured): characters that end a table cell, start HTML or an
  HTML comment, or open emphasis, links, strike-through or math become HTML entities
  or backslash escapes; line breaks become spaces. In text, ``@`` gets a zero-width
  space after it, so ``@pytest.mark.memguard`` reads the same and mentions no one.
  :func:`markdown_code` wraps the text in ``<code>`` instead, inside which GitHub links
  no ``@mention`` or ``#123`` (so a copied path or id gets no invisible character).
* HTML (``<summary>`` lines, which GitHub does not parse as markdown): entities only.
* XML 1.0: ElementTree escapes markup, but characters XML 1.0 forbids (control
  characters, lone surrogates, U+FFFE/U+FFFF) would make the file unparsable; they
  are shown as ``#x1B`` the way pytest's own ``--junitxml`` shows them.
* Mermaid chart labels: only letters, digits and a few harmless signs survive.
"""

from __future__ import annotations

import re

__all__ = [
    "escape_html",
    "escape_markdown",
    "markdown_code",
    "mermaid_label",
    "shorten",
    "xml_safe",
]

# XML 1.0 Char, minus DEL (as pytest's junitxml): everything else is shown as "#xNN".
_ILLEGAL_XML = re.compile("[^\u0009\u000a\u000d\u0020-\u007e\u0080-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\t\u2028\u2029\x85]")
# Entities for what ends a table cell or starts HTML; backslashes for markdown's own signs.
_MARKDOWN = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "'": "&#39;",
        "|": "&#124;",
        "\\": "&#92;",
        "`": "&#96;",
        "*": "\\*",
        "_": "\\_",
        "[": "\\[",
        "]": "\\]",
        "~": "\\~",
        "$": "\\$",
        "!": "\\!",
        "#": "\\#",
    }
)
# GitHub links "@name" in text, also when written "&#64;name" (entities are decoded before it
# looks); a zero-width space after "@" does not show and stops it. Not in <code>: no link there.
_MARKDOWN_TEXT = {**_MARKDOWN, ord("@"): "@&#8203;"}
_LINE_START = re.compile(r"^\s*(?:[-+=]|\d+[.)])")
_MERMAID_UNSAFE = re.compile(r"[^\w .:/=+-]+")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"#x{code:02X}" if code <= 0xFF else f"#x{code:04X}"


def xml_safe(text: object) -> str:
    """``text`` with every character XML 1.0 forbids shown as ``#xNN`` (``"a\\x1bb"`` → ``"a#x1Bb"``)."""
    return _ILLEGAL_XML.sub(_visible, str(text))


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut in the middle (an id's file and its parameters both matter)."""
    if len(text) <= limit:
        return text
    if limit < 2:
        return text[:limit]
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def _one_line(text: object) -> str:
    return xml_safe(_LINE_BREAKS.sub(" ", str(text)))


def escape_markdown(text: object) -> str:
    """Inline markdown text, safe in a table cell, a list item or a paragraph, on one line, mentioning no one."""
    escaped = _one_line(text).translate(_MARKDOWN_TEXT)
    # At the start of a line "-", "+", "1." or "1)" would begin a list and "=" a heading underline.
    return _LINE_START.sub(lambda match: f"{match[0][:-1]}\\{match[0][-1]}", escaped, count=1)


def markdown_code(text: object) -> str:
    """Text shown as code in markdown (``<code>``, not backticks: an id may contain backticks)."""
    return f"<code>{_one_line(text).translate(_MARKDOWN)}</code>"


def escape_html(text: object) -> str:
    """Text for an HTML element GitHub does not parse as markdown, such as ``<summary>``."""
    escaped = _one_line(text)
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#39;")):
        escaped = escaped.replace(char, entity)
    return escaped


def mermaid_label(text: object, limit: int = 24) -> str:
    """A chart label: quotes, brackets, backticks, ``%%`` and line breaks gone, at most ``limit`` characters."""
    cleaned = " ".join(_MERMAID_UNSAFE.sub(" ", _one_line(text)).split())
    return shorten(cleaned, limit) or "?"

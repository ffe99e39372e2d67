"""Asterisk dial patterns (``_555XXXX``, ``_X.``) for matching DIDs.

``X`` any digit, ``Z`` 1-9, ``N`` 2-9, ``[1-4a]`` a set, ``.`` one or more
characters, ``!`` zero or more; anything else is literal. A pattern must
start with ``_``; a DID without it is an exact number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CLASSES = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}


@dataclass(frozen=True)
class DialPattern:
    text: str
    regex: re.Pattern[str]
    specificity: tuple[int, int]  # literal characters, then length: higher wins

    def matches(self, number: str) -> bool:
        return self.regex.fullmatch(number) is not None


def compile_pattern(text: str) -> DialPattern:
    if not text.startswith("_"):
        raise ValueError("a pattern starts with _")
    body, out, literals, i = text[1:], [], 0, 0
    while i < len(body):
        char = body[i]
        if char.upper() in _CLASSES:
            out.append(_CLASSES[char.upper()])
        elif char == "[":
            end = body.find("]", i)
            if end == -1:
                raise ValueError(f"unclosed [ in {text!r}")
            members = body[i + 1 : end]
            out.append("[" + "".join("-" if c == "-" else re.escape(c) for c in members) + "]")
            i = end
        else:
            out.append(re.escape(char))
            literals += 1
        i += 1
    return DialPattern(text, re.compile("".join(out)), (literals, len(body)))


def best_match(number: str, patterns: list[DialPattern]) -> DialPattern | None:
    """The most specific pattern matching ``number``."""
    hits = [p for p in patterns if p.matches(number)]
    return max(hits, key=lambda p: p.specificity, default=None)

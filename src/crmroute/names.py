"""Names of rules, integrations and agents: any script's letters, compared ignoring case and spacing.

``tidy()`` is how a name is stored (runs of white space made one space, NFC);
``name_key()`` is what uniqueness compares: NFKC with case folded, so
``VIP``, ``vip`` and ``ＶＩＰ`` are one name, and ``Müller`` typed with a
combining diaeresis is the same as with ``ü``.
"""

from __future__ import annotations

import unicodedata

NAME_PUNCTUATION = " _.-"
NAME_RULE = "use letters (any language), digits, spaces and - _ . only, starting with a letter or digit"


def tidy(name: str) -> str:
    return unicodedata.normalize("NFC", " ".join(name.split()))


def name_key(name: str) -> str:
    folded = unicodedata.normalize("NFKC", tidy(name)).casefold()
    return unicodedata.normalize("NFKC", " ".join(folded.split()))


def name_problem(name: str) -> str | None:
    """Why ``name`` (already tidied) cannot be a name, or ``None``."""
    if not name:
        return "required"
    for position, char in enumerate(name):
        category = unicodedata.category(char)
        if category[0] in "LN" or (position and (category[0] == "M" or char in NAME_PUNCTUATION)):
            continue
        return NAME_RULE
    return None

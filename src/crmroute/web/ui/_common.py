"""What the UI pages share: the posted form, paging, field errors and list rows of a form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData

from crmroute.errors import ConfigError
from crmroute.schemas import problems

PAGE_SIZE = 50


async def posted_form(request: Request) -> FormData:
    """The submitted form (already parsed by the CSRF check, so this is free)."""
    return await request.form()


FormDep = Annotated[FormData, Depends(posted_form)]


def text(form: FormData, name: str) -> str:
    """A text field, trimmed; ``""`` when absent or a file."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def secret(form: FormData, name: str) -> str:
    """A password-like field, as typed (not trimmed)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def checked(form: FormData, name: str) -> bool:
    return form.get(name) in ("on", "yes", "true", "1")


def indexed(form: FormData, prefix: str, untrimmed: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows posted as ``prefix-N-field`` inputs, ordered by N (the page re-numbers them in screen order).

    Values are trimmed, except the fields named in ``untrimmed`` (secrets).
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-(\w+)$")
    rows: dict[int, dict[str, str]] = {}
    for key, value in form.multi_items():
        match = pattern.match(key)
        if match and isinstance(value, str):
            field = match.group(2)
            rows.setdefault(int(match.group(1)), {})[field] = value if field in untrimmed else value.strip()
    return [rows[i] for i in sorted(rows)]


def error_map(found: list[tuple[str, str]]) -> dict[str, str]:
    """Field path to message (several messages for one field joined)."""
    errors: dict[str, str] = {}
    for path, message in found:
        errors[path] = f"{errors[path]}; {message}" if path in errors else message
    return errors


def problems_of(exc: ValidationError | ConfigError) -> dict[str, str]:
    return error_map(problems(exc) if isinstance(exc, ValidationError) else exc.problems)


@dataclass(frozen=True)
class Page:
    """One page of a list: ``total`` rows, showing ``offset`` .. ``offset + limit``."""

    total: int
    offset: int
    limit: int
    params: tuple[tuple[str, str], ...] = ()  # the list's filters, kept by the pager's links

    @property
    def first(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.offset + self.limit, self.total)

    @property
    def previous(self) -> str | None:
        return self.link(max(self.offset - self.limit, 0)) if self.offset > 0 else None

    @property
    def next(self) -> str | None:
        return self.link(self.offset + self.limit) if self.offset + self.limit < self.total else None

    def link(self, offset: int) -> str:
        query = [(k, v) for k, v in self.params if v] + ([("offset", str(offset))] if offset else [])
        return "?" + urlencode(query) if query else "?"


def clamp_offset(offset: int) -> int:
    return max(offset, 0)


def filters(**params: Any) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in params.items() if v not in (None, ""))

"""Directory: caller records crmroute keeps itself, from a CSV or JSON file or a table in the database.

The embedded CRM of a first run and of a small office whose callers live in a
spreadsheet. Columns ``phone`` (and ``mobile``: ``phone_columns``), ``name``,
``owner`` and any others; optional ``id``, ``module`` (the row is found only in
that module) and ``modified`` (for ``match_pick``; without it a later row counts
as newer). Every column is a field a rule can read; a dotted column name
(``Account.Name``) is read as written, and a JSON file's nested objects with a dot.

A lookup is an in-memory index: numbers normalised with ``phonenumbers`` (the
same ``PhoneForms.matches`` check the text-comparing vendors use, so
``(555) 123-0001``, ``555.123.0001`` and ``+15551230001`` are one number), keyed
by their last digits. The file is read once, then watched: when its size, time
or inode changes it is read again in a thread, and a file that no longer parses
keeps the last good index (the error is logged and shown by Test). The table
lives in the integration's ``entries`` setting, so an edit reaches every process
like any settings change.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from crmroute.connectors._phone import PhoneForms, digits_of, phone_forms
from crmroute.connectors.base import (
    MODULE_NAMES,
    CallActivity,
    Connector,
    ConnectorSettings,
    Record,
    Token,
    field_text,
    lookup_path,
)
from crmroute.deadline import Deadline
from crmroute.errors import ConnectorTimeout, ConnectorUnavailable, UnexpectedResponse
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

RELOAD_INTERVAL_S = 1.0  # how often the file's size, time and inode are compared
MAX_FILE_BYTES = 50 * 1024 * 1024
SUFFIX_DIGITS = 6  # the index key: a number's last digits (verified with PhoneForms.matches)
RESERVED = ("id", "module", "modified")
CSV_DELIMITERS = ",;\t"


class DirectoryError(ConnectorUnavailable):
    """The directory cannot be read; the message names the file (or table) and the row."""

    reason = "bad_directory"


class DirectorySettings(ConnectorSettings):
    path: str = Field(
        "", description="CSV or JSON file of caller records (columns phone, name, owner, any fields), in the data "
        "directory (link other files there); empty: the table (entries)"
    )  # fmt: skip
    phone_columns: str = Field("phone,mobile", description="Columns holding phone numbers, comma separated")
    entries: list[dict[str, Any]] = Field(
        default_factory=list, description="The table kept in the database when no path is given: one row per "
        "caller, the same columns as the file"
    )  # fmt: skip
    cache_ttl_s: int | None = Field(
        0, ge=0, le=86_400, description="Seconds a value is reused (default 0: a lookup is in memory, and an edit "
        "is seen at once)"
    )  # fmt: skip

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        """Inside the data directory: whoever may edit integrations must not read the server's other files
        through Test (an operator who wants another file links it there)."""
        if not value:
            return value
        path = PurePosixPath(value.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or value.startswith("~"):
            raise ValueError("must be a file in the data directory, e.g. callers.csv (link other files there)")
        if path.suffix.lower() not in (".csv", ".tsv", ".txt", ".json"):
            raise ValueError("must be a .csv, .tsv, .txt or .json file")
        return value

    @field_validator("phone_columns")
    @classmethod
    def _phone_columns(cls, value: str) -> str:
        if not columns_of(value):
            raise ValueError("name at least one column, e.g. phone,mobile")
        return value

    @field_validator("entries")
    @classmethod
    def _entries(cls, value: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        if "phone_columns" in info.data:  # a bad row is refused when saved, naming it
            build_index(table_rows(value), info.data["phone_columns"], info.data.get("key_field", ""), where="table")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "DirectorySettings":
        if self.path and self.entries:
            raise ValueError("give a file (path) or a table (entries), not both")
        return self


def table_rows(entries: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"row {n}", row) for n, row in enumerate(entries, 1)]


def columns_of(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


@dataclass
class Entry:
    where: str  # "line 4" / "row 3": what an error or the Test report names
    id: str
    module: str  # empty: every module
    fields: dict[str, Any]
    phones: list[str]


@dataclass
class Index:
    entries: list[Entry] = field(default_factory=list)
    by_suffix: dict[str, list[Entry]] = field(default_factory=dict)
    by_key: dict[str, list[Entry]] = field(default_factory=dict)
    source: str = ""  # the file, or "the table"
    loaded_at: float = 0.0  # time.time()


def build_index(
    rows: Iterable[tuple[str, dict[str, Any]]], phone_columns_text: str, key_field: str, *, where: str
) -> Index:
    """The index of ``rows`` (``(location, columns)``); ``ValueError`` naming the row for a bad one."""
    phone_columns = [c.casefold() for c in columns_of(phone_columns_text)]
    key_field = key_field.strip().casefold()
    index = Index(source=where, loaded_at=time.time())
    for location, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{location}: a record must be an object of column: value")
        fields: dict[str, Any] = {}
        folded: dict[str, Any] = {}
        for name, value in row.items():
            column = str(name).strip()
            if not column:
                raise ValueError(f"{location}: a column has no name")
            if column.casefold() in folded:
                raise ValueError(f"{location}: column {column!r} is given twice")
            if isinstance(value, (list, tuple)):
                raise ValueError(f"{location}: column {column!r} holds a list; give text")
            if isinstance(value, str):
                value = value.strip()
            fields[column] = value
            folded[column.casefold()] = value
        phones = []
        for column in phone_columns:
            text = folded.get(column)
            if text in (None, ""):
                continue
            if not isinstance(text, (str, int)) or isinstance(text, bool) or not digits_of(str(text)):
                raise ValueError(f"{location}: {column} {text!r} is not a phone number")
            phones.append(str(text))
        module = str(folded.get("module") or "").strip().casefold()
        if module and module not in MODULE_NAMES:
            raise ValueError(f"{location}: module {module!r} is not one of {', '.join(MODULE_NAMES)}")
        entry = Entry(location, str(field_text(folded.get("id")) or location), module, fields, phones)
        index.entries.append(entry)
        for phone in phones:
            suffix = digits_of(phone)[-SUFFIX_DIGITS:]
            bucket = index.by_suffix.setdefault(suffix, [])
            if entry not in bucket:
                bucket.append(entry)
        key = field_text(folded.get(key_field)) if key_field else entry.id
        if key:
            index.by_key.setdefault(key.casefold(), []).append(entry)
    return index


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The rows of a CSV/TSV or JSON file as ``(location, columns)``; ``ValueError`` saying what and where."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8") from None
    if "\x00" in text:
        raise ValueError("not text: a NUL byte (a binary or UTF-16 file?)")
    if path.suffix.lower() == ".json":
        return json_rows(text)
    return csv_rows(text, "\t" if path.suffix.lower() == ".tsv" else None)


def json_rows(text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise ValueError('must be a JSON list of records (or {"records": [...]})')
    return [(f"record {n}", row) for n, row in enumerate(data, 1)]


def csv_rows(text: str, delimiter: str | None) -> list[tuple[str, dict[str, Any]]]:
    header_line = text.lstrip("\r\n").split("\n", 1)[0]
    if delimiter is None:  # comma, unless the header has more semicolons or tabs (spreadsheets' exports)
        delimiter = max(CSV_DELIMITERS, key=lambda d: (header_line.count(d), d == ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[str, dict[str, Any]]] = []
    header: list[str] | None = None
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank lines
            if header is None:
                header = [c.strip() for c in cells]
                for n, name in enumerate(header, 1):
                    if not name:
                        raise ValueError(f"line {reader.line_num}: column {n} of the header has no name")
                continue
            if len(cells) > len(header):
                raise ValueError(f"line {reader.line_num}: {len(cells)} cells, but the header names {len(header)} "
                                 "columns")  # fmt: skip
            rows.append((f"line {reader.line_num}", dict(zip(header, cells))))
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}: {exc}") from None
    if header is None:
        raise ValueError("empty: the first line names the columns, e.g. phone,name,owner,Status")
    return rows


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


async def _watch(ref: weakref.ref[DirectoryConnector]) -> None:
    """Reload the connector's file when it changes, until the connector is closed or gone."""
    while True:
        await asyncio.sleep(RELOAD_INTERVAL_S)
        connector = ref()
        if connector is None:
            return
        try:
            await connector.reload_if_changed()
        except Exception:  # a bug here must not end the watching
            logger.exception("directory: watching %s failed", connector.file)
        del connector


class DirectoryConnector(Connector):
    kind = "directory"
    title = "Directory (file or table)"
    docs_url = "https://docs.python.org/3/library/csv.html"
    Settings = DirectorySettings
    MODULES = {"accounts": "accounts", "contacts": "contacts", "leads": "leads"}
    limits_source = "none: crmroute's own memory"
    max_concurrency = 1_000
    # The owner column: what owner routing (the `owner` destination) resolves to an agent by user id or e-mail.
    owner_field: ClassVar[str] = "owner"
    settings: DirectorySettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._index: Index | None = None
        self._error: DirectoryError | None = None  # the last load's failure (the index, if any, is older)
        self._loaded_sig: tuple[int, int, int] | None = None
        self._failed_sig: tuple[int, int, int] | None = None
        self._loading: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None

    @cached_property  # the pool sets data_dir before the first use; resolved once, not on every call
    def file(self) -> Path | None:
        """The file in the data directory (the working directory when the pool gave none)."""
        if not self.settings.path:
            return None
        return Path(self.data_dir or ".").resolve() / self.settings.path

    # --- the index ------------------------------------------------------------------

    async def index(self, *, deadline: Deadline) -> Index:
        """The current index: built from the table, or the file read once (then watched)."""
        if self._index is not None:
            return self._index
        file = self.file
        if file is None:
            try:
                self._index = build_index(table_rows(self.settings.entries), self.settings.phone_columns,
                                          self.settings.key_field, where="the table")
            except ValueError as exc:  # settings are checked when saved; an older row may not be
                raise DirectoryError(f"directory table, {exc}", kind=self.kind, operation="load") from None
            return self._index
        if self._watcher is None:
            self._watcher = asyncio.create_task(_watch(weakref.ref(self)), name=f"directory watch {file}")
        if self._error is not None and _signature(file) == self._failed_sig:
            raise self._error  # unchanged since it failed: not read again for every call
        if self._loading is None:
            self._loading = asyncio.create_task(self._load(file))
        try:
            await asyncio.wait_for(asyncio.shield(self._loading), max(deadline.remaining(), 0.001))
        except TimeoutError:
            raise ConnectorTimeout(f"directory file {file} was not read in time", kind=self.kind,
                                   operation="load") from None  # fmt: skip
        if self._index is None:
            assert self._error is not None
            raise self._error
        return self._index

    async def _load(self, file: Path) -> None:
        """Read ``file`` in a thread; on success replace the index, else keep it and remember the error."""
        sig = _signature(file)
        try:
            index = await asyncio.to_thread(self._read, file)
        except DirectoryError as exc:
            if sig != self._failed_sig:
                logger.error("%s%s", exc, "; still using the records read before" if self._index else "")
            self._error, self._failed_sig = exc, sig
        else:
            if self._index is not None:
                logger.info("directory file %s changed: %d records", file, len(index.entries))
            self._index, self._loaded_sig, self._error, self._failed_sig = index, sig, None, None
        finally:
            self._loading = None

    def _read(self, file: Path) -> Index:
        try:
            return build_index(read_rows(file), self.settings.phone_columns, self.settings.key_field, where=str(file))
        except ValueError as exc:
            raise DirectoryError(f"directory file {file}: {exc}", kind=self.kind, operation="load") from None

    async def reload_if_changed(self) -> None:
        file = self.file
        if file is None or self._loading is not None:
            return
        sig = _signature(file)
        if sig != self._loaded_sig and sig != self._failed_sig:
            self._loading = asyncio.create_task(self._load(file))
            await asyncio.shield(self._loading)

    # --- the connector interface -----------------------------------------------------------

    async def authenticate(self, *, deadline: Deadline, force: bool = False, refused: Token | None = None) -> Token:
        """Nothing to sign in to: the directory is read (once) instead."""
        await self.index(deadline=deadline)
        return Token("directory")

    async def verify(self, *, deadline: Deadline) -> str:
        index = await self.index(deadline=deadline)
        if self._error is not None:  # the file changed and no longer reads: calls use the older records
            raise self._error
        where = "in the table" if self.file is None else f"from {index.source}"
        loaded = datetime.fromtimestamp(index.loaded_at).strftime("%Y-%m-%d %H:%M:%S")
        return f"{len(index.entries)} records {where} (read {loaded})"

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        if module not in self.MODULES:
            self.vendor_module(module)  # raises, naming the module
        index = await self.index(deadline=deadline)
        if key.source == "dtmf":
            candidates = index.by_key.get(key.value.strip().casefold(), [])
        else:
            forms: PhoneForms = phone_forms(key.value, self.region)
            suffix = (forms.national_digits or forms.digits)[-SUFFIX_DIGITS:]
            candidates = [e for e in index.by_suffix.get(suffix, []) if any(forms.matches(p) for p in e.phones)]
        found = [e for e in candidates if not e.module or e.module == module]
        if not found:
            return None
        by_fields = {id(e.fields): e for e in found}
        chosen, matches = self.pick([e.fields for e in found], "modified")
        entry = by_fields[id(chosen)]
        where = self.file.name if self.file is not None else "table"  # the trace reads "directory.csv line 4"
        return Record(where, entry.id, entry.fields, matches)

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        """A column by its name (any case, dots included), else a dotted path into a JSON file's objects."""
        wanted = api_name.strip().casefold()
        for column, value in record.fields.items():
            if column.casefold() == wanted:
                return field_text(value)
        return field_text(lookup_path(record.fields, api_name))

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        raise UnexpectedResponse("a directory keeps no call history: turn this integration's log options off",
                                 kind=self.kind, operation="log_call", reason="not_supported")  # fmt: skip

    async def aclose(self) -> None:
        for task in (self._watcher, self._loading):
            if task is not None:
                task.cancel()
        self._watcher = self._loading = None
        await super().aclose()

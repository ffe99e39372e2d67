"""The directory kind: the record contract on a CSV file, a JSON file and a table; reloading; bad files."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from crmroute.connectors import directory, registry
from crmroute.connectors.base import Connector, setting_specs
from crmroute.connectors.directory import DirectoryConnector, DirectoryError
from crmroute.connectors.pool import ConnectorPool, ConnectorSpec
from crmroute.deadline import Deadline
from crmroute.errors import ConnectorError
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from crmroute.store.secrets import SecretBox
from tests.connectors.contract import CALLER, RecordContract
from tests.connectors.fakecrm import FakeRecord


def deadline(seconds: float = 5.0) -> Deadline:
    return Deadline.after_ms(seconds * 1000)


def flatten(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested fields as dotted columns (``{"Account": {"Name": x}}`` -> ``Account.Name``), as a CSV holds them."""
    flat: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{name}.")
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def columns(record: FakeRecord, *, nested: bool) -> dict[str, Any]:
    fields = record.fields if nested else flatten(record.fields)
    return {"id": record.id, "module": record.module, "phone": record.phone, "name": record.name,
            "modified": record.modified} | fields  # fmt: skip


class DirectoryFake:
    """Stands in for a vendor: ``records`` set by a contract test are written where the connector reads them."""

    def __init__(self, tmp_path: Path, form: str) -> None:
        self.form = form  # csv, json or table
        self.path = tmp_path / ("callers.json" if form == "json" else "callers.csv")
        self._records: list[FakeRecord] = []

    @property
    def records(self) -> list[FakeRecord]:
        return self._records

    @records.setter
    def records(self, records: list[FakeRecord]) -> None:
        self._records = records
        if self.form == "json":
            self.path.write_text(json.dumps([columns(r, nested=True) for r in records]))
        elif self.form == "csv":
            rows = [columns(r, nested=False) for r in records]
            names = list(dict.fromkeys(name for row in rows for name in row)) or ["phone"]
            with self.path.open("w", newline="") as file:
                writer = csv.DictWriter(file, names)
                writer.writeheader()
                writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)

    def entries(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in columns(r, nested=False).items() if v is not None} for r in self._records]


class LazyTable:
    """A table-variant connector built at its first lookup: the rows live in its settings, so they must be known."""

    def __init__(self, fake: DirectoryFake, overrides: dict[str, Any]) -> None:
        self.fake, self.overrides = fake, overrides
        self.real: Connector | None = None

    def _connector(self) -> Connector:
        if self.real is None:
            cls = registry()["directory"]
            values = {"entries": self.fake.entries()} | self.overrides
            self.real = cls(cls.Settings.model_validate(values), None, region="US")
        return self.real

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._connector().fetch(*args, **kwargs)

    async def find_record(self, *args: Any, **kwargs: Any) -> Any:
        return await self._connector().find_record(*args, **kwargs)

    async def read_field(self, *args: Any, **kwargs: Any) -> Any:
        return await self._connector().read_field(*args, **kwargs)


class DirectoryContract(RecordContract):
    kind = "directory"
    MODULE = "contacts"
    FIELD = "Status"
    NESTED_FIELD = "Account.Name"
    KEY_FIELD = "AccountNumber"
    MOBILE_FIELDS = {"accounts": "mobile", "contacts": "mobile", "leads": "mobile"}
    FORM = "csv"

    @pytest.fixture
    def fake(self, tmp_path: Path) -> DirectoryFake:
        return DirectoryFake(tmp_path, self.FORM)

    @pytest.fixture
    async def http(self):
        yield None  # no network: the directory is a file or a table

    def settings(self, fake: DirectoryFake) -> dict[str, Any]:
        return {"path": fake.path.name}

    def build(self, fake: DirectoryFake, http: Any, **overrides: Any) -> Any:
        if fake.form == "table":
            return LazyTable(fake, overrides)
        connector = super().build(fake, http, **overrides)
        connector.data_dir = fake.path.parent  # what the pool sets: the file is in the data directory
        return connector

    @pytest.fixture
    async def connector(self, fake: DirectoryFake, http: Any):
        connector = self.build(fake, http)
        yield connector
        real = connector.real if isinstance(connector, LazyTable) else connector
        if real is not None:
            await real.aclose()


class TestDirectoryCsv(DirectoryContract):
    FORM = "csv"


class TestDirectoryJson(DirectoryContract):
    FORM = "json"


class TestDirectoryTable(DirectoryContract):
    FORM = "table"


# --- the kind itself ---------------------------------------------------------------------------


def test_kind_describes_itself():
    cls = registry()["directory"]
    assert cls.title and cls.limits_source and set(cls.MODULES) == {"accounts", "contacts", "leads"}
    specs = {s.name: s for s in setting_specs(cls.Settings)}
    assert specs["path"].type == "string" and specs["entries"].type == "table"
    assert not any(s.secret for s in specs.values())  # nothing to sign in to
    assert all(s.help for s in specs.values())
    assert specs["cache_ttl_s"].default == 0  # in memory: an edit is seen by the next call


def connector_for(path: Path, **settings: Any) -> DirectoryConnector:
    """A connector reading ``path``, whose folder is the data directory."""
    cls = registry()["directory"]
    connector = cls(cls.Settings.model_validate({"path": path.name} | settings), None, region="US")
    connector.data_dir = path.parent
    return connector


def write_csv(path: Path, text: str) -> None:
    """Write ``text`` and move the file's time on, so a change is seen even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


SAMPLE = "phone,name,owner,Status\n(555) 123-0001,Alice Gold,olivia@example.com,GOLD\n"


async def fetch(connector: DirectoryConnector, caller: str = "+15551230001", name: str = "Status") -> str | None:
    return await connector.fetch(LookupKey(caller, "caller_id"), "contacts", name, deadline=deadline())


async def test_owner_and_name_are_fields_and_every_phone_format_is_one_number(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, SAMPLE)
    connector = connector_for(path)
    try:
        for caller in ("+15551230001", "5551230001", "15551230001", "555-123-0001"):
            assert await fetch(connector, caller, "owner") == "olivia@example.com"
        assert await fetch(connector, "+15551230001", "NAME") == "Alice Gold"  # column names in any case
        assert await fetch(connector, "+15559990001") is None
    finally:
        await connector.aclose()


async def test_a_lookup_reads_no_file(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    write_csv(path, SAMPLE)
    reads = []
    real = directory.read_rows
    monkeypatch.setattr(directory, "read_rows", lambda p: reads.append(p) or real(p))
    connector = connector_for(path)
    try:
        results = await asyncio.gather(*(fetch(connector) for _ in range(50)))
        assert results == ["GOLD"] * 50
        assert len(reads) == 1  # concurrent first calls share the one read; later ones use the index
    finally:
        await connector.aclose()


async def wait_for_value(connector: DirectoryConnector, expected: str | None, timeout: float = 15.0) -> None:
    started = time.monotonic()
    while (value := await fetch(connector)) != expected:
        assert time.monotonic() - started < timeout, f"still {value!r}, not {expected!r}"
        await asyncio.sleep(0.1)


async def test_the_file_is_reloaded_when_it_changes_and_a_bad_change_keeps_the_last_good_records(tmp_path, caplog):
    path = tmp_path / "d.csv"
    write_csv(path, SAMPLE)
    connector = connector_for(path)
    try:
        assert await fetch(connector) == "GOLD"
        write_csv(path, SAMPLE.replace("GOLD", "SILVER"))
        await wait_for_value(connector, "SILVER")  # within the watch interval (1 s), on a loaded machine too

        with caplog.at_level(logging.ERROR, logger="crmroute.connectors.directory"):
            write_csv(path, SAMPLE.replace("GOLD", "BRONZE") + "not a phone,Bob,,SILVER\n")
            started = time.monotonic()
            while not caplog.records:
                assert time.monotonic() - started < 15, "the bad change was never noticed"
                await asyncio.sleep(0.1)
        message = caplog.records[0].getMessage()
        assert str(path) in message and "line 3" in message and "still using the records read before" in message
        assert await fetch(connector) == "SILVER"  # calls keep the last good records
        report = await connector.test(None)
        assert not report.ok and report.error_code == "bad_directory" and "line 3" in report.error_message

        path.unlink()  # an editor's save: a new file under the same name
        write_csv(path, SAMPLE.replace("GOLD", "PLATINUM"))
        await wait_for_value(connector, "PLATINUM")
        report = await connector.test("+15551230001", fields=["Status"])
        assert report.ok, report.as_dict()
        assert report.steps[1].detail.startswith(f"1 records from {path}")
        assert report.record["fields"]["Status"] == "PLATINUM" and report.record["id"] == "line 2"
    finally:
        await connector.aclose()


BAD_FILES = [
    ("missing.csv", None, "No such file"),
    ("bad.csv", "phone,name\n(555) 123-0001,Alice\nabc,Bob\n", "line 3: phone 'abc' is not a phone number"),
    ("cells.csv", "phone,name\n5551230001,Alice,extra\n", "line 2: 3 cells, but the header names 2 columns"),
    ("empty.csv", "\n\n", "empty: the first line names the columns"),
    ("header.csv", "phone,,name\n5551230001,x,Alice\n", "line 1: column 2 of the header has no name"),
    ("twice.csv", "phone,Phone\n5551230001,5551230002\n", "line 2: column 'Phone' is given twice"),
    ("latin1.csv", b"phone,name\n5551230001,Ren\xe9\n", "line 2: not UTF-8 text"),
    ("module.csv", "phone,module\n5551230001,deals\n", "line 2: module 'deals' is not one of"),
    ("bad.json", '[{"phone": "5551230001"},', "not JSON"),
    ("shape.json", '{"phone": "5551230001"}', "must be a JSON list of records"),
    ("record.json", '[{"phone": "5551230001"}, "Bob"]', "record 2: a record must be an object"),
    ("list.json", '[{"phone": "5551230001", "tags": ["a"]}]', "record 1: column 'tags' holds a list"),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
async def test_a_bad_file_is_a_clear_error_naming_the_file_and_row(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    connector = connector_for(path)
    try:
        with pytest.raises(DirectoryError) as caught:
            await fetch(connector)
        assert isinstance(caught.value, ConnectorError) and caught.value.reason == "bad_directory"
        assert str(caught.value).startswith(f"directory file {path}: ") and expected in str(caught.value)
        report = await connector.test("+15551230001")
        assert not report.ok and expected in report.error_message
    finally:
        await connector.aclose()


async def test_an_unchanged_bad_file_is_not_read_again_for_every_call(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    write_csv(path, "phone\nabc\n")
    reads = []
    real = directory.read_rows
    monkeypatch.setattr(directory, "read_rows", lambda p: reads.append(p) or real(p))
    connector = connector_for(path)
    try:
        for _ in range(5):
            with pytest.raises(DirectoryError):
                await fetch(connector)
        assert len(reads) == 1
        write_csv(path, SAMPLE)  # fixed: the next call reads it
        assert await fetch(connector) == "GOLD"
    finally:
        await connector.aclose()


async def test_semicolons_tabs_and_a_bom_as_spreadsheets_export(tmp_path):
    semicolons = tmp_path / "excel.csv"
    semicolons.write_bytes("\ufeffphone;name;Status\n+44 20 7946 0006;Zoë;GOLD\n".encode())
    tabs = tmp_path / "sheet.tsv"
    tabs.write_text("phone\tStatus\n+44 20 7946 0006\tSILVER\n")
    for path, value in ((semicolons, "GOLD"), (tabs, "SILVER")):
        connector = connector_for(path)
        try:
            assert await fetch(connector, "+442079460006") == value
        finally:
            await connector.aclose()


async def test_module_column_limits_a_row_and_the_pick_follows_the_file_order(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, "phone,module,Status\n5551230001,accounts,ACCOUNT\n5551230001,,FIRST\n5551230001,,LAST\n")
    newest, oldest = connector_for(path), connector_for(path, match_pick="oldest")
    try:
        key = LookupKey("+15551230001", "caller_id")
        record = await newest.find_record(key, "contacts", deadline=deadline())
        assert record is not None and record.matches == 2 and record.fields["Status"] == "LAST"  # no dates: later row
        assert record.module == "d.csv" and record.id == "line 4"
        assert await oldest.fetch(key, "contacts", "Status", deadline=deadline()) == "FIRST"
        assert await newest.fetch(key, "accounts", "Status", deadline=deadline()) == "LAST"
    finally:
        await newest.aclose()
        await oldest.aclose()


async def test_a_relative_path_is_in_the_data_directory(tmp_path):
    write_csv(tmp_path / "callers.csv", SAMPLE)
    pool = ConnectorPool(None, SecretBox(Fernet.generate_key()), "US", data_dir=tmp_path)  # type: ignore[arg-type]
    connector = pool.get(ConnectorSpec(1, "Office", "directory", True, {"path": "callers.csv"}, ""))
    try:
        assert await fetch(connector) == "GOLD"  # type: ignore[arg-type]
    finally:
        await pool.aclose()


async def test_a_directory_logs_no_calls(tmp_path):
    write_csv(tmp_path / "d.csv", SAMPLE)
    connector = connector_for(tmp_path / "d.csv")
    with pytest.raises(ConnectorError, match="keeps no call history"):
        await connector.log_call(None, LogOptions(), deadline=deadline())  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings", "expected"), [
    ({"path": "a.csv", "entries": [{"phone": "1"}]}, "give a file (path) or a table (entries), not both"),
    ({"entries": [{"phone": "5551230001"}, {"phone": "call me"}]}, "row 2: phone 'call me' is not a phone number"),
    ({"path": "callers.xlsx"}, "must be a .csv, .tsv, .txt or .json file"),
    ({"path": "/etc/shadow.csv"}, "must be a file in the data directory, e.g. callers.csv (link other files there)"),
    ({"path": "../secret.json"}, "must be a file in the data directory"),
    ({"path": "~root/x.csv"}, "must be a file in the data directory"),
    ({"phone_columns": " , "}, "name at least one column"),
])  # fmt: skip
def test_settings_are_checked_when_saved(settings, expected):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        registry()["directory"].Settings.model_validate(settings)
    assert expected in str(caught.value)


async def test_the_table_records_and_the_test_report(tmp_path):
    cls = registry()["directory"]
    entries = [{"phone": "(555) 123-0001", "name": "Alice", "owner": "201", "Status": "GOLD", "account": "4242"}]
    connector = cls(cls.Settings.model_validate({"entries": entries, "key_field": "account"}), None, region="US")
    assert await connector.fetch(LookupKey("4242", "dtmf"), "leads", "owner", deadline=deadline()) == "201"
    report = await connector.test(CALLER)
    assert report.ok and report.steps[1].detail.startswith("1 records in the table")
    assert report.steps[2].detail == "no record matches"

"""The credential store (store/credentials.py) on SQLite and PostgreSQL, with a vendor stub that rotates.

The per-kind behaviour against the HTTPS vendor fakes is in ``tests/connectors/contract.py`` (shared
credentials); the real-process runs are in ``tests/test_credentials_processes.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from crmroute.connectors.base import Connector, ConnectorSettings, Token
from crmroute.deadline import Deadline
from crmroute.errors import AuthError
from crmroute.store import credentials
from crmroute.store.credentials import CredentialStore, SharedCredentials, origins
from crmroute.store.models import ConnectorCredential, Integration


@dataclass
class Vendor:
    """Issues access tokens for a refresh token, rotating it (the old one dies)."""

    live: set[str] = field(default_factory=lambda: {"rt-0"})
    logins: list[str] = field(default_factory=list)
    delay: float = 0.0
    refuse: bool = False
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))


class StubSettings(ConnectorSettings):
    account: str = "acme"
    refresh_token: SecretStr = SecretStr("rt-0")


class Stub(Connector):
    kind = "stub"
    title = "Stub CRM"
    Settings = StubSettings
    vendor: Vendor

    async def _login(self, *, deadline: Deadline) -> Token:
        refresh = self.refresh_token(self.settings.refresh_token.get_secret_value())
        self.vendor.logins.append(refresh)
        await asyncio.sleep(self.vendor.delay)
        if self.vendor.refuse or refresh not in self.vendor.live:
            raise AuthError("Stub CRM: invalid_grant", kind=self.kind, operation="authenticate", reason="http_400")
        number = next(self.vendor.counter)
        self.vendor.live.discard(refresh)
        self.vendor.live.add(f"rt-{number}")
        return Token(f"at-{number}", time.monotonic() + 3600, {"refresh_token": f"rt-{number}"})


@pytest.fixture
def integration_id(store) -> int:
    with store.factory() as session, session.begin():
        row = Integration(name="Stub", kind="stub", settings={}, secrets_enc="")
        session.add(row)
        session.flush()
        return row.id


def stub(store, integration_id: int, vendor: Vendor, *, principal: str = "", for_test: bool = False,
         **settings) -> Stub:  # fmt: skip
    connector = Stub(StubSettings.model_validate(settings), None)  # type: ignore[arg-type]  # no HTTP: the stub
    connector.vendor = vendor
    origin, base = origins("stub", connector.settings, principal, "")
    db = CredentialStore(store.factory, store.box)
    shared = SharedCredentials(db, integration_id, principal, origin, base, "Stub")
    shared.retry_refused = for_test
    connector.credentials = shared
    return connector


def deadline(seconds: float = 10.0) -> Deadline:
    return Deadline.after_ms(seconds * 1000)


def test_the_lease_has_one_winner_among_many_threads(store, integration_id):
    db = CredentialStore(store.factory, store.box)
    start, won = threading.Barrier(8), []

    def take(owner: str) -> None:
        start.wait(timeout=10)
        if db.try_lease(integration_id, "", owner, 30):
            won.append(owner)

    threads = [threading.Thread(target=take, args=(f"p{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) == 1
    assert not db.try_lease(integration_id, "", "late", 30)
    db.release(integration_id, "", won[0])
    assert db.try_lease(integration_id, "", "late", 30)


async def test_many_connectors_at_once_make_one_login_and_share_it(store, integration_id):
    vendor = Vendor(delay=0.2)
    connectors = [stub(store, integration_id, vendor) for _ in range(10)]  # ten processes, one store
    tokens = await asyncio.gather(*(c.authenticate(deadline=deadline()) for c in connectors))
    assert vendor.logins == ["rt-0"]
    assert {t.value for t in tokens} == {"at-1"}


async def test_a_restart_reuses_the_stored_token_and_the_rotated_refresh_token(store, integration_id):
    vendor = Vendor()
    first = stub(store, integration_id, vendor)
    token = await first.authenticate(deadline=deadline())
    again = await stub(store, integration_id, vendor).authenticate(deadline=deadline())
    assert again.value == token.value and vendor.logins == ["rt-0"]
    assert 3500 < again.expires_at - time.monotonic() <= 3600  # wall clock in the row, monotonic in memory
    with store.factory() as session:
        row = session.scalars(select(ConnectorCredential)).one()
    assert "at-1" not in row.state_enc and "rt-1" not in row.state_enc  # encrypted at rest
    later = stub(store, integration_id, vendor)
    await later.authenticate(deadline=deadline(), force=True, refused=again)  # the vendor said 401 to it
    assert vendor.logins == ["rt-0", "rt-1"]  # the rotated refresh token, not the configured dead one


async def test_new_credentials_discard_the_rotated_token_other_settings_keep_it(store, integration_id):
    vendor = Vendor()
    token = await stub(store, integration_id, vendor).authenticate(deadline=deadline())
    tuned = stub(store, integration_id, vendor, cache_ttl_s=5, max_concurrency=3)  # tuning: same origin
    assert (await tuned.authenticate(deadline=deadline())).value == token.value
    vendor.live.add("rt-new")
    pasted = stub(store, integration_id, vendor, refresh_token="rt-new")  # an admin pasted new credentials
    assert (await pasted.authenticate(deadline=deadline())).value != token.value
    assert vendor.logins == ["rt-0", "rt-new"]
    other_account = origins("stub", StubSettings(account="other"))
    assert other_account != origins("stub", StubSettings())


async def test_principals_have_their_own_credentials(store, integration_id):
    vendor = Vendor(live={"rt-0"})
    shared = await stub(store, integration_id, vendor).authenticate(deadline=deadline())
    vendor.live.add("rt-0")  # the same configured token works for the rule's user too (a stub)
    own = await stub(store, integration_id, vendor, principal="alice").authenticate(deadline=deadline())
    assert own.value != shared.value and len(vendor.logins) == 2


async def test_refused_credentials_are_recorded_once_and_fail_at_once(store, integration_id, caplog, monkeypatch):
    monkeypatch.setattr("crmroute.connectors.registry", lambda: {"stub": Stub})  # the admin pages list it
    vendor = Vendor(refuse=True)
    first = stub(store, integration_id, vendor)
    with pytest.raises(AuthError) as caught:
        await first.authenticate(deadline=deadline())
    assert caught.value.reason == "credentials_refused" and "invalid_grant" in str(caught.value)
    for connector in (first, stub(store, integration_id, vendor), stub(store, integration_id, vendor)):
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=deadline())
        assert caught.value.reason == "credentials_refused"
    assert vendor.logins == ["rt-0"]  # the token endpoint was asked once
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "crmroute.store.credentials"]
    assert len(errors) == 1
    with store.factory() as session, session.begin():
        session.get(Integration, integration_id).settings = {"account": "acme", "refresh_token": "rt-0"}
    with store.factory() as session:
        shown = credentials.refused(session, store.box)
    assert [(r["integration"], r["message"]) for r in shown] == [("Stub", "Stub CRM: invalid_grant")]
    vendor.refuse = False
    tester = stub(store, integration_id, vendor, for_test=True)
    assert (await tester.authenticate(deadline=deadline(), force=True)).value == "at-1"
    with store.factory() as session:
        assert credentials.refused(session, store.box) == []


async def test_a_refusal_is_forgotten_when_the_credentials_change(store, integration_id):
    vendor = Vendor(refuse=True)
    with pytest.raises(AuthError):
        await stub(store, integration_id, vendor).authenticate(deadline=deadline())
    vendor.refuse = False
    vendor.live.add("rt-pasted")
    token = await stub(store, integration_id, vendor, refresh_token="rt-pasted").authenticate(deadline=deadline())
    assert token.value == "at-1" and vendor.logins == ["rt-0", "rt-pasted"]


async def test_a_database_outage_keeps_the_rotated_token_in_memory_and_saves_it_later(store, integration_id, caplog):
    vendor = Vendor()
    connector = stub(store, integration_id, vendor)
    shared = connector.credentials
    assert shared is not None
    good = shared.store.factory
    shared.store.factory = _broken_factory
    token = await connector.authenticate(deadline=deadline())  # logs in on its own
    assert token.value == "at-1" and connector._refresh_state == "rt-1"
    shared.store.factory = good
    shared._unsaved_tried = -1e9  # the retry is due
    connector._token = None
    again = await connector.authenticate(deadline=deadline())
    assert again.value == "at-1" and vendor.logins == ["rt-0"]  # saved, then read back: no new login
    restarted = await stub(store, integration_id, vendor).authenticate(deadline=deadline())
    assert restarted.value == "at-1"


def _broken_factory():
    from sqlalchemy.exc import OperationalError

    raise OperationalError("SELECT 1", {}, Exception("database is down"))


async def test_a_waiter_gives_up_at_its_deadline_while_another_process_logs_in(store, integration_id):
    vendor = Vendor(delay=2.0)
    slow = stub(store, integration_id, vendor)
    task = asyncio.create_task(slow.authenticate(deadline=deadline()))
    while not vendor.logins:
        await asyncio.sleep(0.01)
    waiter = stub(store, integration_id, vendor)
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        await waiter.authenticate(deadline=deadline(0.3))
    assert getattr(caught.value, "reason", "") == "timeout"
    assert time.monotonic() - started < 0.3 + 1.5
    assert (await task).value == "at-1"
    assert (await waiter.authenticate(deadline=deadline())).value == "at-1" and vendor.logins == ["rt-0"]

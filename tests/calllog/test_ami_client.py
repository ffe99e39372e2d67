"""The AMI client against a fake Asterisk on loopback: login, keep-alive, reconnects, garbage, status."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from crmroute.calllog.ami import AmiClient, Message
from tests.calllog.fakeami import SECRET, USERNAME, FakeAmi, event, running_ami


@contextlib.asynccontextmanager
async def client_for(ami: FakeAmi, **options):
    events: list[Message] = []
    defaults = {"timeout": 1.0, "ping_interval": 5.0, "backoff_min": 0.05, "backoff_max": 0.2}
    client = AmiClient("127.0.0.1", ami.port, options.pop("username", USERNAME), options.pop("secret", SECRET),
                       on_event=events.append, **(defaults | options))  # fmt: skip
    client.events_seen = events  # type: ignore[attr-defined]
    client.start()
    try:
        yield client
    finally:
        await client.close()


async def until(check, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_logs_in_and_receives_the_recorded_stream_in_order():
    async with running_ami() as ami, client_for(ami) as client:
        await ami.wait_logins(1)
        assert client.status.state == "connected" and client.status.last_error == ""
        login = next(a for a in ami.actions if a["Action"] == "Login")
        assert login == {"Action": "Login", "Username": USERNAME, "Secret": SECRET, "Events": "on",
                         "ActionID": login["ActionID"]}  # fmt: skip
        await ami.replay("inbound-answered", chunk=97)  # split anywhere, as TCP may
        await until(lambda: any(m.event == "Cdr" and m.get("UniqueID") == "asttest-1795657672.1"
                                for m in client.events_seen))  # fmt: skip
        names = [m.event for m in client.events_seen]
        assert names[0] == "FullyBooted" and names.count("Hangup") == 4 and names.count("Cdr") == 3
        assert client.garbage == 0
    assert client.status.state == "stopped"
    assert ami.actions[-1]["Action"] == "Logoff"


async def test_refused_login_is_reported_and_retried_with_backoff():
    async with running_ami() as ami, client_for(ami, secret="wrong") as client:
        await until(lambda: ami.refused_logins >= 3)
        assert client.status.state in ("reconnecting", "connecting")
        assert "refused the login" in client.status.last_error and "Authentication failed" in client.status.last_error
        assert "wrong" not in client.status.last_error and "wrong" not in repr(client)


async def test_unreachable_asterisk_is_reconnecting_with_the_reason():
    async with running_ami() as ami:
        port = ami.port
    client = AmiClient("127.0.0.1", port, USERNAME, SECRET, timeout=0.5, backoff_min=0.05, backoff_max=0.1)
    client.start()
    try:
        await until(lambda: "refused" in client.status.last_error)
        assert client.status.state == "reconnecting"
    finally:
        await client.close()


async def test_reconnects_after_a_dropped_connection_and_lists_channels():
    listed = []

    async def on_connect(client: AmiClient) -> None:
        listed.append([c.get("Uniqueid") for c in await client.action_list({"Action": "CoreShowChannels"})])

    async with running_ami() as ami, client_for(ami, on_connect=on_connect) as client:
        ami.channels = [{"Channel": "PJSIP/201-00000001", "Uniqueid": "1.1", "Linkedid": "1.1"}]
        await ami.wait_logins(1)
        await ami.drop()
        await ami.wait_logins(2)
        await until(lambda: len(listed) == 2)
        assert listed == [["1.1"], ["1.1"]]
        assert client.status.state == "connected" and client.status.disconnects == 1 and client.status.connects == 2
        await ami.send(event("Newchannel", Uniqueid="2.2", Linkedid="2.2"))
        await until(lambda: any(m.get("Uniqueid") == "2.2" for m in client.events_seen))


async def test_survives_an_asterisk_restart():
    async with running_ami() as ami, client_for(ami) as client:
        await ami.wait_logins(1)
        await ami.restart(down=0.3)
        await until(lambda: client.status.state != "connected")
        await ami.wait_logins(2)
        assert client.status.state == "connected"
        boots = [m for m in client.events_seen if m.event == "FullyBooted"]
        assert [b.get("Uptime") for b in boots] == ["3600", "1"]


async def test_unanswered_ping_drops_the_session_and_reconnects():
    # A second for each answer: a loaded machine answers pings late, and a late one is a second disconnect.
    async with running_ami() as ami, client_for(ami, ping_interval=0.1, timeout=1.0) as client:
        await ami.wait_logins(1)
        ami.answer_ping = False
        await until(lambda: "Ping" in client.status.last_error)
        ami.answer_ping = True
        await ami.wait_logins(2)
        await until(lambda: client.status.state == "connected")
        await until(lambda: sum(a["Action"] == "Ping" for a in ami.actions) >= 2)  # kept alive again
        assert client.status.disconnects == 1


async def test_garbage_never_stops_the_reader():
    async with running_ami() as ami, client_for(ami) as client:
        await ami.wait_logins(1)
        await ami.send(b"\x00\xff garbage without colon\r\n\r\nnot: an event\r\n\r\n" + b"Z" * 100_000 + b"\r\n")
        await ami.send(b"Response: Follows\r\nActionID: nobody\r\nfree text\r\n--END COMMAND--\r\n\r\n")
        await ami.send(event("Hangup", Uniqueid="3.3", Linkedid="3.3"))
        await until(lambda: any(m.get("Uniqueid") == "3.3" for m in client.events_seen))
        assert client.garbage >= 3 and client.status.state == "connected"


async def test_a_server_that_is_not_ami_is_refused():
    async def not_ami(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(not_ami, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AmiClient("127.0.0.1", port, USERNAME, SECRET, timeout=0.5, backoff_min=0.05)
    client.start()
    try:
        await until(lambda: "not an Asterisk Manager Interface" in client.status.last_error)
    finally:
        await client.close()
        server.close()


async def test_actions_need_a_connection():
    client = AmiClient("127.0.0.1", 1, USERNAME, SECRET)
    with pytest.raises(Exception, match="not connected"):
        await client.action({"Action": "Ping"})

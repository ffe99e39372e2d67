"""A bounded AGI fuzz: random and truncated environments, overlong lines, binary garbage and wrong
replies to commands, sent alongside normal calls. The server survives, every bad session is closed
by the server in bounded time, and the normal calls are routed as if nothing happened."""

from __future__ import annotations

import asyncio
import contextlib
import random

from tests.agi.conftest import base_rules
from tests.agi.fakeasterisk import call_agi, default_env, env_bytes

SEED = 20260506
BAD_SESSIONS = 120
GOOD_CALLS = 40
ENV_TIMEOUT = 1.0  # the server's time to read an environment (5 s by default: shortened for the test)
FINISH_TIMEOUT = 1.0  # and to write an answer nobody reads
# How long a client waits for the server to close: far beyond the server's own timeouts, so only a
# session the server never closes runs into it, however loaded the machine.
PATIENCE = ENV_TIMEOUT + FINISH_TIMEOUT + 25
MAX_LINE = 8192


def random_env(rng: random.Random, port: int) -> tuple[bytes, bool]:
    """Some bytes an unruly client might send, and whether it then keeps the connection open."""
    pairs = default_env(port, "did", extension="5551000", callerid=f"+1555{rng.randrange(10**7):07d}")
    kind = rng.choice(["truncated", "no_blank", "overlong", "garbage", "binary", "repeat", "not_agi", "huge_block",
                       "empty", "crlf_mess", "random_values"])  # fmt: skip
    if kind == "truncated":
        data = env_bytes(pairs)
        return data[: rng.randrange(1, len(data) - 1)], rng.random() < 0.5
    if kind == "no_blank":
        return env_bytes(pairs, blank_line=False), True  # waits for the env timeout
    if kind == "overlong":
        return env_bytes(pairs[:3], blank_line=False) + b"agi_x: " + b"A" * (MAX_LINE + rng.randrange(1, 50_000)) + b"\n\n", False
    if kind == "garbage":
        return bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 3000))) + b"\n\n", False
    if kind == "binary":
        return rng.randbytes(rng.randrange(1, 5000)), rng.random() < 0.3
    if kind == "repeat":
        return env_bytes(pairs + pairs[:2]), False
    if kind == "not_agi":
        return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False
    if kind == "huge_block":
        return env_bytes([(f"x{n}", "y") for n in range(500)]), False
    if kind == "empty":
        return b"\n", False
    if kind == "crlf_mess":
        return env_bytes(pairs).replace(b"\n", b"\r\r\n"), False
    values = [(name, "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(0, 40)))) for name, _ in pairs]
    return env_bytes(values), False


async def unruly_session(port: int, data: bytes, linger: bool) -> bool:
    """Send ``data``; when ``linger``, keep the socket open. Whether the server closed the session
    before our patience ran out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(data)
            await writer.drain()
        if not linger and writer.can_write_eof():
            with contextlib.suppress(ConnectionError, OSError):
                writer.write_eof()
        try:
            async with asyncio.timeout(PATIENCE):
                while await reader.read(65536):
                    pass  # whatever the server answers (CRMROUTE_STATUS=error), until it closes
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            pass  # reset by the server: closed too
        return True
    finally:
        writer.close()


def wrong_reply(rng: random.Random):
    choices = ["999 nonsense", "200 result", "200", "", "HANGUP", "520-usage never ends", "511 dead", "510 no",
               "200 result=1 (unclosed", "\x00\x01\x02", "x" * 100, "200 result=-1"]  # fmt: skip

    def respond(command: str) -> str | list[str] | None:
        pick = rng.random()
        if pick < 0.4:
            return rng.choice(choices)
        if pick < 0.5:
            return [rng.choice(choices) for _ in range(rng.randrange(2, 6))]
        return None  # a proper answer

    return respond


# 80 distinct callers at once: above the Custom CRM's default budget (50 requests, 50 a second),
# which is not what these tests are about.
BUDGET = {"custom_requests_per_second": "1000", "custom_max_concurrency": "200"}


async def fuzz_stack(stack_factory, crm_url: str):
    """The usual stack, with VIP's deadline long enough that a loaded machine still matches every
    normal call: these tests are about the fuzz doing no harm, test_calls about the deadline."""
    rules = base_rules(crm_url)
    rules["rules"][0]["deadline_ms"] = 15_000
    stack = await stack_factory(rules, **BUDGET)
    stack.server.env_timeout, stack.server.finish_timeout = ENV_TIMEOUT, FINISH_TIMEOUT
    stack.crm.values = {"Status": "GOLD"}
    return stack


async def test_fuzzed_sessions_do_not_disturb_normal_calls(stack_factory, custom_crm):
    stack = await fuzz_stack(stack_factory, custom_crm.url)
    rng = random.Random(SEED)
    unruly = [unruly_session(stack.port, *random_env(rng, stack.port)) for _ in range(BAD_SESSIONS)]
    wrong = [call_agi(stack.port, "did", env={"extension": "5551000", "callerid": f"+1555444{n:04d}"},
                      respond=wrong_reply(random.Random(SEED + n)), timeout=PATIENCE) for n in range(40)]  # fmt: skip
    good = [call_agi(stack.port, "did", env={"extension": "5551000", "callerid": f"+1555333{n:04d}"}, timeout=PATIENCE)
            for n in range(GOOD_CALLS)]  # fmt: skip
    closed, wrong_results, good_results = await asyncio.gather(
        asyncio.gather(*unruly), asyncio.gather(*wrong), asyncio.gather(*good)
    )
    assert closed == [True] * BAD_SESSIONS  # the server closed every one, in bounded time
    assert all(r.closed_by_server for r in wrong_results)  # wrong replies end the session, nothing hangs
    assert [r.variables["CRMROUTE_STATUS"] for r in good_results] == ["matched"] * GOOD_CALLS
    for result in await asyncio.gather(*(call_agi(stack.port, "did", env={"extension": "5551000"}) for _ in range(5))):
        assert result.variables["CRMROUTE_STATUS"] == "matched"  # still serving, unharmed
    for _ in range(200):
        if stack.server.active_sessions == 0:
            break
        await asyncio.sleep(0.05)
    assert stack.server.active_sessions == 0 and stack.server.serving


async def test_normal_calls_amid_fuzz_are_all_routed(stack_factory, custom_crm):
    stack = await fuzz_stack(stack_factory, custom_crm.url)
    rng = random.Random(SEED + 1)
    unruly = asyncio.gather(*(unruly_session(stack.port, *random_env(rng, stack.port)) for _ in range(60)))
    good = await asyncio.gather(*(call_agi(stack.port, "did", env={"extension": "5551000",
                                                                   "callerid": f"+1555222{n:04d}"}, timeout=PATIENCE)
                                  for n in range(GOOD_CALLS)))  # fmt: skip
    assert await unruly == [True] * 60
    assert [r.variables["CRMROUTE_STATUS"] for r in good] == ["matched"] * GOOD_CALLS
    assert all(r.jump == ("crmroute-queue", "103", "1") for r in good)

"""Single-flight: concurrent identical lookups share one request; a caller leaving early cancels nothing."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from crmroute.errors import ConnectorTimeout
from crmroute.resilience.flight import SingleFlight


async def test_100_concurrent_identical_lookups_make_one_request():
    flights: SingleFlight[str] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def work() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "GOLD"

    tasks = [asyncio.create_task(flights.do("caller-1", work)) for _ in range(100)]
    await asyncio.sleep(0)
    assert len(flights) == 1 and flights.running("caller-1")
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [value for value, _ in results] == ["GOLD"] * 100
    assert sum(1 for _, shared in results if not shared) == 1  # one started it, 99 joined
    assert len(flights) == 0


async def test_different_keys_do_not_share():
    flights: SingleFlight[str] = SingleFlight()
    started = []

    async def work_for(key: str):
        async def work() -> str:
            started.append(key)
            await asyncio.sleep(0)
            return key

        return await flights.do(key, work)

    results = await asyncio.gather(*(work_for(k) for k in ("a", "b", "a")))
    assert sorted(started) == ["a", "b"]
    assert [value for value, _ in results] == ["a", "b", "a"]


async def test_every_waiter_gets_the_failure_and_the_next_call_tries_again():
    flights: SingleFlight[str] = SingleFlight()
    attempts = 0

    async def failing() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        raise ValueError("CRM down")

    results = await asyncio.gather(*(flights.do("k", failing) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results) and attempts == 1
    with pytest.raises(ValueError):
        await flights.do("k", failing)
    assert attempts == 2  # failures are not remembered


async def test_a_caller_leaving_early_does_not_cancel_the_shared_request():
    flights: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    finished = []

    async def work() -> str:
        await release.wait()
        finished.append(True)
        return "GOLD"

    impatient = asyncio.create_task(flights.do("k", work))  # started the request
    patient = asyncio.create_task(flights.do("k", work))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):  # the first caller's deadline passes
            await impatient
    assert flights.running("k")
    release.set()
    assert (await patient) == ("GOLD", True)
    assert finished == [True]


async def test_everyone_leaving_still_lets_the_request_finish_quietly(caplog):
    flights: SingleFlight[str] = SingleFlight()
    done = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0.01)
        done.set()
        raise RuntimeError("late failure nobody waits for")

    waiter = asyncio.create_task(flights.do("k", work))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.wait_for(done.wait(), 2)
    await asyncio.sleep(0.01)
    assert not flights.running("k")
    assert "never retrieved" not in caplog.text


async def test_joining_without_work_needs_a_flight():
    flights: SingleFlight[str] = SingleFlight()
    with pytest.raises(RuntimeError):
        await flights.do("k", None)


async def test_aclose_cancels_what_runs():
    flights: SingleFlight[str] = SingleFlight()

    async def forever() -> str:
        await asyncio.sleep(3600)
        return "never"

    waiter = asyncio.create_task(flights.do("k", forever))
    await asyncio.sleep(0)
    await flights.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_a_failed_request_leaves_no_garbage_cycle():
    """A request timed out by ``asyncio.timeout`` kept its frames in a cycle with its task (task ->
    exception -> traceback -> Timeout.__aexit__ frame -> Timeout -> task); collecting hundreds of
    those stalled the event loop for tens of milliseconds when many requests failed together.

    Only this test's own objects are looked for among what the collector finds: other garbage in the
    process (a thread of an earlier test, the event loop's own) is not this test's to judge."""

    async def work(fail: bool) -> str:  # as send_capped times a request out
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1 if fail else 0)
        except TimeoutError as exc:
            raise ConnectorTimeout("the CRM did not answer", reason="timeout") from exc
        return "GOLD"

    flights: SingleFlight[str] = SingleFlight()

    async def call(n: int) -> None:
        with contextlib.suppress(ConnectorTimeout):
            await flights.do(n, lambda: work(True))

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage to be looked at
    try:
        await asyncio.gather(*(call(n) for n in range(20)))
        await asyncio.sleep(0)  # the tasks' done callbacks
        gc.collect()
        ours = [o for o in gc.garbage if isinstance(o, ConnectorTimeout)
                or (isinstance(o, asyncio.Task) and o.get_coro().__qualname__.endswith("work"))]  # fmt: skip
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []

"""Closing the shared state ends its heartbeat, even when a cancel is lost on the way.

Python 3.11's ``asyncio.wait_for`` returns its command's answer instead of raising when the cancel and the answer
arrive in one loop turn (CPython gh-86296). The heartbeat once used it: a whole-suite run hung for 15 minutes in a
stack's teardown, awaiting a heartbeat loop that had swallowed its cancel. No Redis is needed here.
"""

from __future__ import annotations

import asyncio

import pytest

from crmroute.resilience.shared import SharedState


def unreachable_node() -> SharedState:
    return SharedState("redis://127.0.0.1:1/0", "node-a", heartbeat_s=0.01)


async def test_close_returns_when_a_heartbeat_swallows_its_cancel(monkeypatch):
    shared = unreachable_node()
    beating = asyncio.Event()
    lost: list[bool] = []

    async def beat() -> None:  # what a heartbeat did when the cancel met Redis's answer (once)
        beating.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if lost:
                raise
            lost.append(True)

    monkeypatch.setattr(shared, "beat", beat)
    await shared.start()
    beating.clear()
    await beating.wait()  # the heartbeat loop is inside a beat
    closing = asyncio.create_task(shared.close())
    done, _ = await asyncio.wait({closing}, timeout=5)
    if not done:
        closing.cancel()  # (the second cancel reaches the heartbeat: the test ends either way)
    assert lost == [True]
    assert done, "close() is still waiting for a heartbeat loop that lost its cancel"
    assert shared._task is not None and shared._task.done()


async def test_a_heartbeat_cancelled_as_redis_answers_is_cancelled(monkeypatch):
    shared = unreachable_node()
    answer: asyncio.Future = asyncio.get_running_loop().create_future()

    async def heartbeat(**_: object) -> int:
        return await answer

    monkeypatch.setattr(shared, "_heartbeat", heartbeat)
    task = asyncio.create_task(shared.beat())
    await asyncio.sleep(0)  # the beat waits for Redis
    answer.set_result(1)
    task.cancel()  # the answer and the cancel in one loop turn
    with pytest.raises(asyncio.CancelledError):  # (not returned: the cancel was lost)
        await task
    await shared.close()

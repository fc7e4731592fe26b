"""The API front passes requests on a few at a time (ADR 0014 "The API front"): never
more than ``forward_concurrency`` at once to a slow controller; the next waits in a
bounded queue for a bounded time, else 503 with Retry-After; requests that mostly wait
(streams, long polls, operations) take no slot but have a cap of their own; a slot is
free again once the controller's answer is read, whether or not the client takes it;
a body no parser of the API may take never reaches the controller."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from api_limits_util import deep, huge_int
from front_util import Recorded, SlowUpstream, front_on, get_scope, no_body, serving, until

from nfvha.controller.slots import NoSlot, Slots
from nfvha.model.api import ApiLimits, waits


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[SlowUpstream, str]]:
    fake = SlowUpstream()
    async with serving(fake) as url:
        yield fake, url
        fake.release(1000)  # whatever still waits ends with the test


def busy(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert reason in r.text


async def test_never_more_than_n_requests_at_once_and_the_next_one_waits_for_a_slot(
        upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    limits = ApiLimits(forward_concurrency=3, forward_queue=8, forward_queue_timeout_s=60)
    async with front_on(url, limits) as (front, client):
        sent = [asyncio.create_task(client.get(f"/v1/status?i={i}")) for i in range(6)]
        await fake.until(lambda: fake.in_flight == 3)
        await asyncio.sleep(0.2)  # the others had their chance to get through: they wait
        assert len(fake.seen) == 3 and front.slots.waiting == 3
        fake.release()  # one answered: the next one goes on, no more
        await fake.until(lambda: len(fake.seen) == 4)
        assert fake.in_flight == 3
        fake.release(5)
        answers = await asyncio.gather(*sent)
        assert [r.status_code for r in answers] == [200] * 6
        assert fake.max_in_flight == 3
        # First come, first served: the first three at once, then the fourth.
        assert {s.query for s in fake.seen[:3]} == {b"i=0", b"i=1", b"i=2"}
        assert fake.seen[3].query == b"i=3"


async def test_a_full_queue_is_503_with_retry_after_after_that_long(
        upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    limits = ApiLimits(forward_concurrency=1, forward_queue=2, forward_queue_timeout_s=60)
    async with front_on(url, limits) as (front, client):
        held = [asyncio.create_task(client.get("/v1/status")) for _ in range(3)]
        await fake.until(lambda: fake.in_flight == 1)
        await until(lambda: front.slots.waiting == 2)
        t0 = time.monotonic()
        r = await client.get("/v1/hosts")
        # Answered after its Retry-After: a flood asking again at once is paced by it.
        assert 0.9 <= time.monotonic() - t0 < 20
        busy(r, "queue full")
        assert r.headers["content-type"] == "application/problem+json"
        # On the Masakari API, the refusal is a Masakari fault.
        r = await client.get("/v1/segments")
        busy(r, "queue full")
        assert r.json()["serviceUnavailable"]["code"] == 503
        fake.release(3)
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 3
        assert len(fake.seen) == 3 and front.slots.queue_full == 2


async def test_a_request_that_waits_too_long_for_a_slot_is_503(
        upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    limits = ApiLimits(forward_concurrency=1, forward_queue=4, forward_queue_timeout_s=0.3)
    async with front_on(url, limits) as (front, client):
        held = asyncio.create_task(client.get("/v1/status"))
        await fake.until(lambda: fake.in_flight == 1)
        t0 = time.monotonic()
        r = await client.get("/v1/status")
        assert time.monotonic() - t0 >= 0.3
        busy(r, "waited too long")
        fake.release()
        assert (await held).status_code == 200
        assert len(fake.seen) == 1 and front.slots.timed_out == 1
        # The slot is free again: the next one goes through at once.
        fake.release()
        assert (await client.get("/v1/status")).status_code == 200


@pytest.mark.parametrize(("method", "path", "query"), [
    ("GET", "/v1/alarms/stream", b""), ("GET", "/v1/hosts/health/stream", b""),
    ("GET", "/v1/events", b"after=3&wait=5"), ("GET", "/v1/events", b"wait=0.5"),
    ("POST", "/v1/vms/vm1/repair", b""), ("POST", "/v1/vnfcs/web-1/restart", b"")])
def test_streams_long_polls_and_operations_are_requests_that_wait(
        method: str, path: str, query: bytes) -> None:
    assert waits(method, path, query)


@pytest.mark.parametrize(("method", "path", "query"), [
    ("GET", "/v1/events", b""), ("GET", "/v1/events", b"wait=0"),
    ("GET", "/v1/events", b"wait=soon"), ("GET", "/v1/status", b"wait=5"),
    ("GET", "/v1/vms/vm1/repair", b""), ("POST", "/v1/alarms/stream", b""),
    ("POST", "/v1/tokens", b""), ("PUT", "/doctor/events", b"")])
def test_everything_else_works_and_takes_a_slot(method: str, path: str, query: bytes) -> None:
    assert not waits(method, path, query)


async def test_requests_that_wait_hold_a_slot_only_until_the_answer_begins(
        upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    limits = ApiLimits(forward_concurrency=1, forward_queue=8, forward_queue_timeout_s=0.5,
                       forward_waiting=3, forward_start_s=0.3)
    async with front_on(url, limits) as (front, client):
        # A stream's answer begins at once: its slot is free at once.
        send = Recorded()
        stream = asyncio.create_task(front(get_scope("/v1/alarms/stream"), no_body, send))
        await asyncio.wait_for(send.got_body.wait(), 30)
        assert front.slots.in_use == 0 and front.waiting.in_use == 1
        # A long poll and an operation, unanswered: their slot is free after the start time.
        t0 = time.monotonic()
        poll = asyncio.create_task(client.get("/v1/events", params={"wait": "5"}))
        await fake.until(lambda: fake.in_flight == 2)
        await until(lambda: front.slots.in_use == 0)
        operation = asyncio.create_task(client.post("/v1/vms/vm1/start"))
        await fake.until(lambda: fake.in_flight == 3)
        await until(lambda: front.slots.in_use == 0)
        assert time.monotonic() - t0 >= 0.5 and front.waiting.in_use == 3
        # The cap of requests that wait is reached; other requests still get the slot.
        busy(await client.post("/v1/vnfcs/web-1/restart"), "requests that wait")
        working = asyncio.create_task(client.get("/v1/status"))
        await fake.until(lambda: fake.in_flight == 4)
        fake.release(4)
        answers = await asyncio.gather(stream, poll, operation, working)
        assert [r.status_code for r in answers[1:]] == [200] * 3
        assert len(fake.seen) == 4 and front.slots.in_use == front.waiting.in_use == 0


async def test_a_flood_of_requests_that_wait_is_no_more_work_at_once_than_the_slots(
        upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    limits = ApiLimits(forward_concurrency=2, forward_queue=16, forward_queue_timeout_s=60,
                       forward_waiting=32, forward_start_s=60)
    async with front_on(url, limits) as (front, client):
        flood = [asyncio.create_task(client.post(f"/v1/vms/vm{i}/start")) for i in range(6)]
        await fake.until(lambda: fake.in_flight == 2)
        await until(lambda: front.slots.waiting == 4)
        assert len(fake.seen) == 2 and front.waiting.in_use == 6
        fake.release(6)
        assert [r.status_code for r in await asyncio.gather(*flood)] == [200] * 6
        assert fake.max_in_flight == 2


async def test_a_stream_is_passed_back_as_it_comes(upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    async with front_on(url, ApiLimits()) as (front, _):
        send = Recorded()
        call = asyncio.create_task(front(get_scope("/v1/alarms/stream"), no_body, send))
        await asyncio.wait_for(send.got_body.wait(), 30)
        assert send.body == b"data: first\n\n"  # before the controller has sent the rest
        assert front.slots.in_use == 0 and front.waiting.in_use == 1
        fake.release()
        await asyncio.wait_for(call, 30)
        assert send.body == b"data: first\n\ndata: last\n\n"
        assert front.waiting.in_use == 0


async def test_a_client_that_does_not_take_its_answer_holds_no_slot(
        upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    async with front_on(url, ApiLimits(forward_concurrency=1)) as (front, client):
        send = Recorded(block_body=True)
        fake.release()
        call = asyncio.create_task(front(get_scope("/v1/status"), no_body, send))
        await asyncio.wait_for(send.got_body.wait(), 30)
        assert front.slots.in_use == 0  # read from the controller, free again
        fake.release()
        assert (await client.get("/v1/hosts")).status_code == 200
        send.unblock()
        await asyncio.wait_for(call, 30)
        assert json.loads(send.body)["path"] == "/v1/status"


@pytest.mark.parametrize("body", [deep(300), b"[" + huge_int(5000) + b"]"],
                         ids=["deep", "huge-number"])
async def test_json_no_parser_may_take_never_reaches_the_controller(
        upstream: tuple[SlowUpstream, str], body: bytes) -> None:
    fake, url = upstream
    async with front_on(url, ApiLimits()) as (front, client):
        for method, path in (("PATCH", "/vnffm/v1/alarms/a1"), ("PUT", "/doctor/events")):
            r = await client.request(method, path, content=body,
                                     headers={"Content-Type": "application/json"})
            assert r.status_code == 400, r.text
        assert fake.seen == [] and front.proxied == 0
        # A body it takes is passed on as it came.
        fake.release()
        r = await client.put("/doctor/events", content=b'[{"a": 1}]')
        assert r.status_code == 200 and r.json()["body"] == '[{"a": 1}]'


async def test_a_controller_that_does_not_answer_is_503_with_retry_after() -> None:
    async with front_on("http://127.0.0.1:9", ApiLimits()) as (front, client):
        r = await client.get("/v1/status")
        busy(r, "the controller does not answer")
        assert front.slots.in_use == 0


async def test_slots_hand_over_in_order_and_skip_who_gave_up() -> None:
    slots = Slots(1, queue=3, wait_s=60)
    order: list[int] = []
    first = slots.slot()
    await first.__aenter__()

    async def take(i: int) -> None:
        async with slots.slot():
            order.append(i)

    waiting = [asyncio.create_task(take(i)) for i in range(3)]
    await until(lambda: slots.waiting == 3)
    waiting[1].cancel()  # its client went away
    await first.__aexit__(None, None, None)
    await asyncio.gather(waiting[0], waiting[2])
    assert order == [0, 2] and slots.in_use == 0
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]


async def test_a_slot_handed_to_a_waiter_that_gives_up_is_passed_on() -> None:
    slots = Slots(1, queue=2, wait_s=60)
    held = slots.slot()
    await held.__aenter__()
    no_queue = Slots(1, queue=0, wait_s=60)
    async with no_queue.slot():
        with pytest.raises(NoSlot, match="queue full"):
            async with no_queue.slot():
                pass
    got: list[int] = []

    async def take(i: int) -> None:
        async with slots.slot():
            got.append(i)

    w1, w2 = asyncio.create_task(take(1)), asyncio.create_task(take(2))
    await until(lambda: slots.waiting == 2)
    await held.__aexit__(None, None, None)  # handed to w1, which has not run yet...
    w1.cancel()  # ...and gives up: w2 gets it
    await asyncio.gather(w1, w2, return_exceptions=True)
    assert got == [2] and slots.in_use == 0


async def test_a_controller_that_takes_too_long_is_503_and_its_slot_is_free_again(
        upstream: tuple[SlowUpstream, str]) -> None:
    fake, url = upstream
    limits = ApiLimits(forward_concurrency=1, forward_timeout_s=0.3)
    async with front_on(url, limits) as (front, client):
        t0 = time.monotonic()
        busy(await client.get("/v1/status"), "the controller does not answer in time")
        assert time.monotonic() - t0 >= 0.3 and front.slots.in_use == 0
        fake.release(2)
        assert (await client.get("/v1/status")).status_code == 200


async def test_a_deployments_vm_starts_all_get_through_with_the_default_limits(
        upstream: tuple[SlowUpstream, str]) -> None:
    """`nfvha up` starts every VM at once, and a start waits at the controller for its
    agent (seconds). With the default limits they all reach the controller within the
    queue's time limit: the slot of an operation is free once the controller started on
    it (0.5 s let 8 a second through: 36 VMs met 503s)."""
    fake, url = upstream
    limits = ApiLimits()
    async with front_on(url, limits) as (front, client):
        t0 = time.monotonic()
        starts = [asyncio.create_task(client.post(f"/v1/vms/vm{i}/start")) for i in range(36)]
        await fake.until(lambda: len(fake.seen) == 36)
        assert time.monotonic() - t0 < limits.forward_queue_timeout_s
        fake.release(36)
        assert [r.status_code for r in await asyncio.gather(*starts)] == [200] * 36
        assert front.slots.timed_out == 0 and front.slots.queue_full == 0

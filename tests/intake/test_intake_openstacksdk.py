"""A real Masakari client against the intake: openstacksdk's ``instance_ha`` proxy (what
masakari-monitors call) talking HTTP to a uvicorn server on 127.0.0.1.

No Keystone: ``auth_type="none"`` and an endpoint override for the ``instance-ha``
service.  keystoneauth still does its version discovery (``GET /v1``) and negotiates
microversion 1.2 for segments, so that path is exercised too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import uvicorn
from intake_testutil import Recorder, intake_app, intake_topology

from nfvha.api.masakari import host_uuid, segment_uuid, vm_uuid
from nfvha.model.events import Kind
from nfvha.util.clock import ManualClock

openstack = pytest.importorskip("openstack", reason="openstacksdk is not installed")
from keystoneauth1 import noauth, session  # noqa: E402  (installed with openstacksdk)
from openstack import exceptions as os_exc  # noqa: E402

T = TypeVar("T")
START_DEADLINE_S = 10.0


@pytest.fixture
async def endpoint(recorder: Recorder, clock: ManualClock) -> AsyncIterator[str]:
    """The intake app served by uvicorn on a free loopback port; stopped afterwards."""
    app = intake_app(intake_topology(), recorder, clock)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = asyncio.get_running_loop().time() + START_DEADLINE_S
        while not server.started:
            assert not task.done(), "uvicorn stopped while starting"
            assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 10)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sock.close()


@pytest.fixture
async def ha(endpoint: str) -> AsyncIterator[Any]:
    """The ``instance_ha`` proxy.  Making it runs keystoneauth's discovery over HTTP, so
    it is made in a thread while the loop keeps serving."""
    conn = openstack.connect(auth_type="none", instance_ha_endpoint_override=endpoint,
                             load_yaml_config=False, load_envvars=False)
    try:
        yield await call(lambda: conn.instance_ha)
    finally:
        conn.close()


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """openstacksdk blocks; run it in a thread so the server keeps serving."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_monitor_notifications_through_openstacksdk(ha: Any, recorder: Recorder) -> None:
    # Exactly what masakari-monitors' SendNotification.send_notification passes.
    made = await call(ha.create_notification, type="COMPUTE_HOST", hostname="h2",
                      generated_time=datetime.now(UTC).replace(tzinfo=None),
                      payload={"event": "STOPPED", "host_status": "UNKNOWN",
                               "cluster_status": "OFFLINE"})
    assert made.status == "new" and made.source_host_uuid == host_uuid("h2")
    assert [(e.kind, e.entity, e.origin) for e in recorder.events] == [
        (Kind.HOST_DOWN, "host/h2", "masakari")]

    await call(ha.create_notification, type="PROCESS", hostname="h1",
               generated_time=datetime.now(UTC).replace(tzinfo=None),
               payload={"event": "STOPPED", "process_name": "nova-compute"})
    await call(ha.create_notification, type="VM", hostname="h3",
               generated_time=datetime.now(UTC).replace(tzinfo=None),
               payload={"event": "LIFECYCLE", "instance_uuid": vm_uuid("vm3"),
                        "vir_domain_event": "STOPPED_FAILED"})
    assert [(e.kind, e.entity) for e in recorder.events[1:]] == [
        (Kind.HOST_PROCESS_FAILED, "host/h1"), (Kind.VM_CRASHED, "vm/vm3")]

    listed = await call(lambda: list(ha.notifications()))
    assert [n.type for n in listed] == ["VM", "PROCESS", "COMPUTE_HOST"]  # newest first
    # Paged: openstacksdk asks for the next page with the last item's integer id.
    paged = await call(lambda: list(ha.notifications(limit=2)))
    assert [n.notification_uuid for n in paged] == [n.notification_uuid for n in listed]
    one = await call(ha.get_notification, made.notification_uuid)
    assert one.payload == made.payload and one.status == "new"


async def test_masakari_monitors_client_setup(endpoint: str, recorder: Recorder) -> None:
    """masakari-monitors build their client as ``Connection(session=..., interface=...,
    region_name=...)`` from ``[api]`` options; with ``auth_type = none`` and ``endpoint``
    that is keystoneauth's NoAuth plugin, which is what nfvha needs (no Keystone)."""
    def send() -> Any:
        conn = openstack.connection.Connection(
            session=session.Session(auth=noauth.NoAuth(endpoint=endpoint)),
            interface="internal", region_name="RegionOne")
        try:
            return conn.instance_ha.create_notification(
                type="PROCESS", hostname="h3", generated_time=datetime.now(UTC),
                payload={"event": "STOPPED", "process_name": "nova-compute"})
        finally:
            conn.close()

    made = await call(send)
    assert made.status == "new"
    assert [(e.kind, e.entity) for e in recorder.events] == [
        (Kind.HOST_PROCESS_FAILED, "host/h3")]


async def test_refusals_reach_the_monitor_as_masakari_errors(ha: Any, recorder: Recorder
                                                             ) -> None:
    kwargs: dict[str, Any] = {
        "type": "COMPUTE_HOST", "hostname": "h1", "generated_time": datetime.now(UTC),
        "payload": {"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"}}
    await call(ha.create_notification, **kwargs)
    # masakari-monitors stop retrying on exactly this: an HttpException with status 409.
    with pytest.raises(os_exc.ConflictException) as conflict:
        await call(ha.create_notification, **kwargs)
    assert conflict.value.status_code == 409
    assert "is duplicate" in str(conflict.value.details)
    with pytest.raises(os_exc.BadRequestException) as unknown:
        await call(ha.create_notification, **{**kwargs, "hostname": "h9"})
    assert unknown.value.details == "Host with name h9 could not be found."
    with pytest.raises(os_exc.BadRequestException) as bad:
        await call(ha.create_notification, **{**kwargs, "payload": {"event": "EXPLODED"}})
    assert "notification/payload/event" in str(bad.value.details)
    assert len(recorder.events) == 1


async def test_segments_and_hosts_through_openstacksdk(ha: Any) -> None:
    segments = await call(lambda: list(ha.segments()))
    assert [(s.name, s.uuid, s.is_enabled) for s in segments] == [
        ("s1", segment_uuid("s1"), True), ("s2", segment_uuid("s2"), True)]
    hosts = await call(lambda: list(ha.hosts(segment_uuid("s1"))))
    assert [(h.name, h.uuid, h.failover_segment_id) for h in hosts] == [
        ("h1", host_uuid("h1"), segment_uuid("s1")), ("h2", host_uuid("h2"), segment_uuid("s1"))]
    # Handing the SDK its own Segment object: it puts the integer id in the path.
    by_object = await call(lambda: list(ha.hosts(segments[1])))
    assert [h.name for h in by_object] == ["h3"]
    one = await call(ha.get_host, host_uuid("h3"), segment_uuid("s2"))
    assert (one.name, one.on_maintenance, one.reserved) == ("h3", False, False)
    seg = await call(ha.get_segment, segment_uuid("s2"))
    assert seg.name == "s2" and seg.recovery_method == "auto"

"""How notifications travel: keep-alive and closed connections, chunked answers,
HTTPS, credentials in the callbackUri, and an injected httpx client."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from notify_testutil import (
    API_ROOT,
    NotifierFactory,
    Receiver,
    Request,
    make_alarm,
    poll_until,
)

from nfvha.faults.model import FmSubscriptionRequest, NotificationType, SubscriptionAuthentication
from nfvha.faults.notifier import SIGNATURE_HEADER, Notifier, signature

MakeReceiver = Callable[..., Awaitable[Receiver]]


async def ok200(_req: Request, _n: int) -> int:
    return 200


def publish(n: Notifier, count: int) -> list[str]:
    ids: list[str] = []
    for i in range(count):
        ids += n.publish(NotificationType.ALARM, make_alarm(f"a{i}"), api_root=API_ROOT)
    return ids


def accepted_ids_count(rx: Receiver, k: int) -> Callable[[], bool]:
    return lambda: len(rx.accepted_ids()) == k


@pytest.mark.parametrize("style", ["plain", "chunked", "close", "silent-close"])
async def test_answers_of_every_shape_are_understood_without_spurious_failures(
    notifiers: NotifierFactory, style: str
) -> None:
    rx = Receiver(ok200, style=style)
    await rx.start()
    try:
        n = await notifiers(backoff_initial_s=0.01)
        sub = n.subscribe(FmSubscriptionRequest(callbackUri=rx.url), API_ROOT)
        ids = publish(n, 6)
        await rx.wait_for_accepted(ids, within=5)
        assert rx.accepted_ids() == ids
        assert len(rx.requests) == 6  # nothing was sent twice
        assert n.stats()["subscriptions"][sub.id]["failed_attempts_since_start"] == 0
        if style in ("plain", "chunked"):
            assert rx.connections == 1  # one kept-alive connection
        else:
            assert rx.connections == 6
    finally:
        await rx.close()


@pytest.fixture
def tls_files(workdir: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


async def test_https_callback_with_certificate_verification(
    notifiers: NotifierFactory, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    rx = Receiver(style="plain", ssl_context=server_tls)
    await rx.start()
    try:
        # A notifier that does not trust the certificate refuses to deliver.
        untrusting = await notifiers(backoff_initial_s=0.01, backoff_max_s=0.02)
        sub = untrusting.subscribe(FmSubscriptionRequest(callbackUri=rx.url), API_ROOT)
        publish(untrusting, 1)
        await poll_until(lambda: "CERTIFICATE_VERIFY_FAILED" in str(
            untrusting.stats()["subscriptions"][sub.id]["last_error"]))
        assert rx.requests == []
        untrusting.unsubscribe(sub.id)

        trusting = await notifiers(tls_context=ssl.create_default_context(cafile=str(cert)))
        trusting.subscribe(FmSubscriptionRequest(callbackUri=rx.url), API_ROOT)
        ids = publish(trusting, 3)
        await rx.wait_for_accepted(ids, within=5)
        assert rx.connections == 1
    finally:
        await rx.close()


async def test_credentials_and_query_of_the_callback_uri_are_used(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    rx = await receivers()
    n = await notifiers()
    uri = f"http://nfvo:p%40ss@127.0.0.1:{rx.port}/hooks/fm?token=abc"
    n.subscribe(FmSubscriptionRequest(callbackUri=uri), API_ROOT)
    ids = publish(n, 1)
    await rx.wait_for_accepted(ids, within=5)
    req = rx.requests[0]
    assert req.path == "/hooks/fm?token=abc"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"nfvo:p@ss").decode()
    assert req.headers["host"] == f"127.0.0.1:{rx.port}"


async def test_an_injected_httpx_client_is_used_for_every_subscriber(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    secret = "0123456789abcdef-secret"
    seen_agents: list[str] = []

    async def fail_once(req: Request, n: int) -> int:
        seen_agents.append(req.headers.get("user-agent", ""))
        assert req.headers[SIGNATURE_HEADER.lower()] == signature(secret, req.body)
        return 503 if n == 0 else 204

    rxs = [await receivers(fail_once) for _ in range(3)]
    async with httpx.AsyncClient(trust_env=False) as http:
        n = await notifiers(http=http, backoff_initial_s=0.01)
        for rx in rxs:
            n.subscribe(FmSubscriptionRequest(
                callbackUri=rx.url, authentication=SubscriptionAuthentication(secret=secret)),
                API_ROOT)
        ids = publish(n, 2)
        for rx in rxs:
            await rx.wait_until(accepted_ids_count(rx, 2), within=5)
            assert len(rx.requests) == 3
        assert len(ids) == 6
        await n.close()
        assert not http.is_closed  # the caller's client stays the caller's
    assert all(a.startswith("python-httpx") for a in seen_agents)


"""Fixtures for the guest and sample-program tests.

The guest runs as a plain subprocess in a temp dir ``/tmp/nfvha-test-*`` (no root, no
namespaces); its VNFCs are counters on free loopback ports.  Every process a test
starts (guest, VNFCs, samples) is killed by pid and start time afterwards, and the temp
dir removed, even when the test fails.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_testutil import GuestLauncher, ProcessTracker


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nfvha-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[ProcessTracker]:
    tracker = ProcessTracker()
    try:
        yield tracker
    finally:
        tracker.cleanup()


@pytest.fixture
def guests(workdir: Path, procs: ProcessTracker) -> Iterator[GuestLauncher]:
    launcher = GuestLauncher(workdir=workdir, tracker=procs)
    try:
        yield launcher
    finally:
        for guest in launcher.started:
            # Track the last VNFC incarnations too; `procs` then kills them all.
            with contextlib.suppress(OSError, ValueError):
                guest.vnfcs()

"""Fixtures for the schema-migration tests: a temp dir ``/tmp/nfvha-<run>-*``
removed after each test, even when it fails."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.util.runpaths import RunPaths, new_run_id


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{RunPaths(new_run_id()).tag}-migrations-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

"""The daemons freeze what they built at start-up, once: later full collections walk
only what was made since (util/gcfreeze.py)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from nfvha.util.gcfreeze import freeze_long_lived
import nfvha.controller.front  # a daemon's worth of modules
assert gc.get_freeze_count() == 0
freeze_long_lived()
frozen = gc.get_freeze_count()
leftover = len(gc.get_objects())
junk = [[i] for i in range(1000)]
freeze_long_lived()  # once per process: what came since is not frozen
assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)
print(frozen, leftover)
"""


def test_start_up_objects_are_frozen_once() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    frozen, leftover = int(out[0]), int(out[1])
    assert frozen > 10_000  # the modules' functions, classes, schemas
    assert leftover < frozen / 10  # a full collection now walks a fraction of it

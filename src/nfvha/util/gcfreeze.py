"""Long-lived objects out of the garbage collector's full passes.

A full (generation 2) collection walks every tracked object of the process: in the
controller - its modules, FastAPI's and pydantic's schemas, the topology, the
stores - that took 66-92 ms (measured during ``nfvha bench abuse``), an event loop
stalled that long at a moment nobody chooses: an agent's event waited for it, and
the HA director's leases could. What a daemon has built by the time it serves lives
as long as the process: ``freeze_long_lived`` moves it to the permanent generation
(``gc.freeze``), so that later collections walk only what was made since. Objects
frozen are still freed when their last reference goes; only a reference cycle among
them would stay, which is why this is done once, after start-up.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_long_lived() -> None:
    """Collect once, then freeze what is left (once per process)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()

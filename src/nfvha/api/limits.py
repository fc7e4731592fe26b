"""Bounded input on every route of the controller's API (ADR 0016).

Two plain ASGI layers, installed by ``install_limits`` around everything else:

* ``BodyLimit`` (``nfvha.util.bodylimit``): a body over the route's limit is 413.
* ``JsonGuard`` (``nfvha.util.jsonguard``): a body that is JSON no parser of this API
  may take is 400.

Both are in ``util`` because the API's fronts (``controller/front.py``, ADR 0014)
apply them too, before they pass a request on: behind a front, what reaches the
controller has passed them already, and they hold here again for whoever reaches
the controller's own address.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware

from nfvha.model.api import ApiLimits, is_masakari
from nfvha.util.bodylimit import BodyLimit, reject_as
from nfvha.util.jsonguard import JsonGuard

# Refusals in the shape of the route's other errors: Masakari's faults on the Masakari
# API, problem details elsewhere.
reject = reject_as(is_masakari)


def install_limits(app: FastAPI, limits: ApiLimits) -> None:
    """Bound what every route of ``app`` takes: the body limit outside all of the app's
    other middleware (a body too large is refused before anything else runs), the JSON
    guard inside all of it (a request the authenticator refuses is never parsed)."""
    app.user_middleware.insert(0, Middleware(BodyLimit, limit_for=limits.body_limit,
                                             reject=reject))
    app.user_middleware.append(Middleware(JsonGuard, reject=reject))

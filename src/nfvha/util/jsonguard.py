"""JSON that no parser of the API may take is refused, for every route (ADR 0016).

In ``util`` so that both the controller's API (``api/limits.py``) and the API's
fronts (``controller/front.py``, ADR 0014), which may not import the API layer,
apply the same rules: a body the front refuses never reaches the controller.

Why the guard: two parsers read bodies here. pydantic-core (jiter) refuses nesting
deeper than 200 levels and integers of more than 4,300 digits with an error, which
the routes answer 400. The standard library's ``json`` (FastAPI's body parameters,
and before this the alarm PATCH) does not: 1,000 levels raise ``RecursionError`` in
its C scanner and a 5,000-digit integer ``ValueError`` from ``int`` (Python's
``int_max_str_digits``, 4,300 by default), neither of them a ``JSONDecodeError``,
so the PATCH answered 500. And what a body costs to parse is not its size alone:
every array and object is a Python container the garbage collector tracks, so a
body of ``[[]]`` costs many times one of the same size in strings.

The guard's rules hold for every request, whatever route and parser: at most
``JSON_MAX_CONTAINERS`` (200) arrays and objects in one body, so nothing nests
deeper than either parser takes and the containers are few; numbers of at most
``JSON_MAX_DIGITS`` (40) digits and exponents under 100, so no number is huge (no
number this API takes comes close). The check does not parse: it counts bytes
outside the body's strings, at the speed of ``bytes.count``; only a body whose raw
bytes suggest a finding has its strings set aside first.
"""

from __future__ import annotations

from nfvha.util.bodylimit import App, Message, Receive, Reject, Scope, Send

# pydantic-core nests objects 200 levels deep at most (arrays 201), json ~1,000.
JSON_MAX_CONTAINERS = 200
JSON_MAX_DIGITS = 40  # 2**63 has 19; a double needs 17 significant digits
# Digits to "0", "E" to "e": a long number is a run of zeros, a large exponent e000.
_NUMBERS = bytes.maketrans(b"123456789E", b"000000000e")
_TOO_MANY_DIGITS = b"0" * (JSON_MAX_DIGITS + 1)
_LARGE_EXPONENTS = (b"e000", b"e+000", b"e-000")


def outside_strings(body: bytes) -> bytes:
    """``body`` without what its JSON strings hold: structure, numbers and literals.
    Escaped backslashes, then escaped quotes, are taken out first (left to right, as
    a JSON reader takes them); then every other quote opens or closes a string."""
    flat = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(flat.split(b'"')[::2])


def _finding(text: bytes) -> str | None:
    containers = text.count(b"[") + text.count(b"{")
    if containers > JSON_MAX_CONTAINERS:
        return (f"the JSON body has more than {JSON_MAX_CONTAINERS} arrays and objects"
                f" ({containers}); this API takes at most {JSON_MAX_CONTAINERS} in one"
                " request, nested or not")
    numbers = text.translate(_NUMBERS)
    if _TOO_MANY_DIGITS in numbers:
        return f"the JSON body has a number of more than {JSON_MAX_DIGITS} digits"
    if any(e in numbers for e in _LARGE_EXPONENTS):
        return "the JSON body has a number with an exponent of 100 or more (or -100 or less)"
    return None


def json_problem(body: bytes) -> str | None:
    """Why ``body`` is JSON this API does not take, or None. Not a full check: a body
    that passes may still be malformed, which the route's parser says."""
    if _finding(body) is None:  # strings included: a finding may be in one of them
        return None
    return _finding(outside_strings(body))


def has_body(scope: Scope) -> bool:
    """Whether the request has a body: a non-zero Content-Length or a Transfer-Encoding
    (HTTP/1.1: without either there is none)."""
    for k, v in scope.get("headers", ()):
        name = k.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and v.strip() != b"0"):
            return True
    return False


class JsonGuard:
    """Reads a request's body (already bounded by ``BodyLimit`` outside it), answers 400
    (through ``reject``) if it is JSON no parser of the API may take, and hands it on
    otherwise."""

    def __init__(self, app: App, reject: Reject) -> None:
        self.app = app
        self._reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                # Gone (or cut off at the body limit, which has answered 413); a
                # middleware outside may still want to see an answer.
                await self._reject(scope, send, 400, "the request body did not arrive")
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        problem = json_problem(body)
        if problem is not None:
            await self._reject(scope, send, 400, problem)
            return
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if handed:
                return await receive()  # what comes after the body: a disconnect
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

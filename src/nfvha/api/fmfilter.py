"""ETSI SOL013 attribute-based filtering: ``filter=(eq,perceivedSeverity,CRITICAL);
(neq,ackState,ACKNOWLEDGED)``. Terms are ANDed; several values of ``eq``/``in``
are ORed; nested attributes are joined with ``/``
(``rootCauseFaultyResource/faultyResourceType``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

OPS = ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "cont", "ncont")
_TERM = re.compile(r"^\((\w+),([A-Za-z_/]+),(.*)\)$")


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    op: str
    path: tuple[str, ...]
    values: tuple[str, ...]


def parse_filter(expr: str, attributes: set[str]) -> list[Term]:
    terms = []
    for raw in expr.split(";"):
        raw = raw.strip()
        m = _TERM.match(raw)
        if not m:
            raise FilterError(f"bad filter term {raw!r}: expected (op,attribute,value[,value])")
        op, path, values = m.group(1), m.group(2), m.group(3)
        if op not in OPS:
            raise FilterError(f"unknown filter operator {op!r}; valid: {', '.join(OPS)}")
        if path not in attributes:
            raise FilterError(f"cannot filter on {path!r}; valid: {', '.join(sorted(attributes))}")
        vals = tuple(v for v in values.split(",") if v != "")
        if not vals:
            raise FilterError(f"filter term {raw!r} has no value")
        terms.append(Term(op, tuple(path.split("/")), vals))
    return terms


def _lookup(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def matches(obj: dict[str, Any], terms: list[Term]) -> bool:
    for t in terms:
        raw = _lookup(obj, t.path)
        values = [_text(v) for v in raw] if isinstance(raw, list) else [_text(raw)]
        if not _term_matches(t, values):
            return False
    return True


def _term_matches(t: Term, values: list[str]) -> bool:
    if t.op in ("eq", "in"):
        return any(v in t.values for v in values)
    if t.op in ("neq", "nin"):
        return all(v not in t.values for v in values)
    if t.op in ("cont", "ncont"):
        found = any(x in v for v in values for x in t.values)
        return found if t.op == "cont" else not found
    limit = t.values[0]
    for v in values:
        a, b = _number(v), _number(limit)
        left, right = (a, b) if a is not None and b is not None else (v, limit)
        ok = {"gt": left > right, "gte": left >= right,  # type: ignore[operator]
              "lt": left < right, "lte": left <= right}[t.op]  # type: ignore[operator]
        if ok:
            return True
    return False

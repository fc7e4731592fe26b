"""Date-times that clients send, bounded to what nfvha can use later (ADR 0016).

A time is taken only if it converts to seconds since the epoch between
1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z (the convention for a naive time is
the sender's: UTC for Masakari, local time for Doctor). Anything else cannot be an
event's time: before, ``0001-01-01T00:00:00+14:00`` was taken and its alarm lost
when the alarm decision could not convert it (``year 0 is out of range``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
# Whole seconds: a later fraction may round up to year 10000 on the way back.
LATEST_EPOCH_S = (LATEST - EPOCH).total_seconds()
RANGE = f"{EPOCH:%Y-%m-%dT%H:%M:%SZ} to {LATEST:%Y-%m-%dT%H:%M:%SZ}"


def parse_iso8601(value: object) -> datetime:
    """A JSON string holding an ISO 8601 date-time.  Masakari checks 'date-time' with
    oslo's parse_isotime; fromisoformat (3.11) reads the same family:
    "2017-04-24 08:34:46", "...T...Z", offsets, fractions of a second."""
    if not isinstance(value, str):
        raise ValueError("must be a string holding an ISO 8601 date-time")
    if len(value) > 64:
        raise ValueError("too long for a date-time")
    try:
        return datetime.fromisoformat(value)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"not an ISO 8601 date-time: {e}") from None


def epoch_seconds(t: datetime, *, naive_is_utc: bool) -> float:
    """Seconds since the epoch; a naive time is UTC or local time as the sender means it."""
    if t.tzinfo is None and not naive_is_utc:
        try:
            return t.timestamp()
        except (OverflowError, ValueError, OSError):
            pass  # outside the platform's local-time range: read it as UTC
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    # Subtraction, not .timestamp(): no overflow at the edges of datetime's range.
    return (t - EPOCH).total_seconds()


def check_usable(t: datetime, *, naive_is_utc: bool) -> datetime:
    """``t`` itself if it is a time nfvha can store and use (see the module's doc)."""
    seconds = epoch_seconds(t, naive_is_utc=naive_is_utc)
    if not 0 <= seconds <= LATEST_EPOCH_S:
        raise ValueError(f"out of range: a time from {RANGE} is taken, in UTC")
    return t


def _usable_utc_naive(t: datetime) -> datetime:
    return check_usable(t, naive_is_utc=True)


def _usable_local_naive(t: datetime) -> datetime:
    return check_usable(t, naive_is_utc=False)


# An ISO 8601 date-time in the usable range; naive means UTC (Masakari: oslo's
# timeutils.utcnow()) or local time (Doctor's sample monitor: datetime.now()).
UtcDateTime = Annotated[datetime, BeforeValidator(parse_iso8601),
                        AfterValidator(_usable_utc_naive)]
LocalDateTime = Annotated[datetime, BeforeValidator(parse_iso8601),
                          AfterValidator(_usable_local_naive)]

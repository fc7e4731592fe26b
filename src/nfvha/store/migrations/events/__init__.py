"""Revisions of the "events" schema (``<run>/controller/events.db``)."""

"""Revisions of the "tokens" schema (``<run>/controller/tokens.db``)."""

"""Revisions of the "amf" schema (``<run>/controller/amf.db``)."""

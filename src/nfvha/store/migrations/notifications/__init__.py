"""Revisions of the "notifications" schema (``<run>/controller/notifications.db``)."""

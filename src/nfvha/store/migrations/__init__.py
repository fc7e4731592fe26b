"""The alembic environment of nfvha's SQLite stores (see ``nfvha.store.schema``).

``env.py`` and ``script.py.mako`` are shared; each schema has its own version
directory (``events/``, ``notifications/``) and so its own linear history.
"""

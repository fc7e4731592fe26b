"""Layer 2: durable state behind a small interface (embedded SQLite today)."""

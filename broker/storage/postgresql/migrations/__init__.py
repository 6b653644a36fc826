"""Numbered PostgreSQL schema migrations, `NNNN_name.sql`, applied in order at start (the same
numbers and names as SQLite's; see `broker.storage.schema`)."""

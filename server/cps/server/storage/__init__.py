"""Durable storage: SQLite (WAL) for library checkpoints and, on a node with
no peer to hold a backup, for server checkpoints."""

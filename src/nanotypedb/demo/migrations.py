"""The tasks app's history, as in the seed: v1 to v5 built the tasks table, v6 added owners, v7 system tables.

A database made by any earlier version upgrades by applying the missing steps in order.
Never edit a step here once released: add the next number instead.
"""

from __future__ import annotations

from ..app import App

HISTORY: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "create tasks",
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending')",
    ),
    (
        2,
        "add tasks.created_at",
        "ALTER TABLE tasks ADD COLUMN created_at TEXT NOT NULL DEFAULT '1970-01-01T00:00:00+00:00'",
    ),
    (3, "index tasks by status", "CREATE INDEX ix_tasks_status ON tasks (status)"),
    (4, "add tasks.updated_at", "ALTER TABLE tasks ADD COLUMN updated_at TEXT"),
    (
        5,
        "normalise legacy status values",
        "UPDATE tasks SET status = 'completed' WHERE status IN ('done', 'complete')",
    ),
    (
        6,
        "row-level security: tasks.owner_id",
        # Every user read is now scoped by owner, which makes the status index dead weight
        # on each insert; the owner index serves listTasks (rows come back in id order).
        "ALTER TABLE tasks ADD COLUMN owner_id TEXT;"
        " CREATE INDEX ix_tasks_owner_id ON tasks (owner_id);"
        " DROP INDEX ix_tasks_status",
    ),
    (
        7,
        "production features: system tables",
        """
        CREATE TABLE _webhooks (id INTEGER PRIMARY KEY, url TEXT NOT NULL, event TEXT NOT NULL,
            headers TEXT, secret TEXT, owner_id TEXT, active INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL);
        CREATE TABLE _files (id TEXT PRIMARY KEY, filename TEXT NOT NULL, content_type TEXT NOT NULL,
            size INTEGER, checksum TEXT, status TEXT NOT NULL DEFAULT 'pending', owner_id TEXT,
            created_at TEXT NOT NULL);
        CREATE TABLE _cron_jobs (id INTEGER PRIMARY KEY, name TEXT NOT NULL, schedule TEXT NOT NULL,
            rpc_method TEXT NOT NULL, rpc_payload TEXT, owner_id TEXT, next_run_at TEXT,
            last_run_at TEXT, created_at TEXT NOT NULL);
        CREATE TABLE _environments (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL, created_at TEXT NOT NULL);
        """,
    ),
)


def register(app: App, upto: int | None = None) -> None:
    """Add the history (or its first `upto` steps, to build older databases in tests)."""
    for number, name, sql in HISTORY:
        if upto is None or number <= upto:
            app.migration(number, name, sql=sql)

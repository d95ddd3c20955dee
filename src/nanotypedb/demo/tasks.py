"""The seed's task manager: listTasks, createTask, updateTask, completeTask, deleteTask, owner-scoped."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from ..app import App
from ..auth.policy import owner_policy
from ..errors import RowNotFound
from ..functions import optimistic
from ..functions.context import Ctx
from ..functions.db import Page
from ..storage.schema import Table, column
from . import migrations

Status = Literal["pending", "completed"]
VectorStatus = Literal["pending", "indexed", "failed"]
Title = Annotated[str, StringConstraints(min_length=1, max_length=500)]

app = App("tasks")
migrations.register(app)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@app.table
class Task(Table, table="tasks", policy=owner_policy("owner_id"), embed=("title",)):
    title: str
    status: Status = "pending"
    created_at: dt.datetime = column(default_factory=_now)
    updated_at: dt.datetime | None = None
    owner_id: str | None = column(None, index=True)
    # Set by the server: pending until the title's embedding is stored, then indexed (or failed).
    vector_status: VectorStatus | None = None


@app.query(name="listTasks")
def list_tasks(
    ctx: Ctx, limit: int = 50, status: Status | None = None, owner_id: str | None = None
) -> list[dict[str, Any]]:
    """The caller's tasks, newest first. `owner_id` only narrows: RLS already limits to the caller."""
    q = ctx.db.query("tasks").order_by("-id").limit(limit)
    if status is not None:
        q = q.where(status=status)
    if owner_id is not None:
        q = q.where(owner_id=owner_id)
    return q.all()


@app.query(name="listTasksPage")
def list_tasks_page(ctx: Ctx, limit: int = 50, cursor: str | None = None, status: Status | None = None) -> Page:
    """One page of the caller's tasks, newest first; pass the returned cursor for the next page."""
    q = ctx.db.query("tasks").order_by("-id")
    if status is not None:
        q = q.where(status=status)
    return q.paginate(limit, cursor)


@app.query(name="countTasks")
def count_tasks(ctx: Ctx, status: Status | None = None) -> int:
    q = ctx.db.query("tasks")
    return (q.where(status=status) if status is not None else q).count()


@app.query(name="getTask")
def get_task(ctx: Ctx, id: int) -> dict[str, Any]:
    row = ctx.db.get("tasks", id)
    if row is None:
        raise RowNotFound(f"No task {id}.")
    return row


@app.mutation(name="createTask", optimistic="insert:tasks")
def create_task(ctx: Ctx, title: Title, status: Status = "pending") -> dict[str, Any]:
    return ctx.db.insert("tasks", {"title": title, "status": status})


@app.mutation(name="updateTask", optimistic="update:tasks")
def update_task(ctx: Ctx, id: int, title: Title | None = None, status: Status | None = None) -> dict[str, Any]:
    changes: dict[str, Any] = {"updated_at": _now()}
    if title is not None:
        changes["title"] = title
    if status is not None:
        changes["status"] = status
    return ctx.db.update("tasks", id, changes)


@app.mutation(name="completeTask", optimistic=optimistic.update("tasks", set={"status": "completed"}))
def complete_task(ctx: Ctx, id: int) -> dict[str, Any]:
    return ctx.db.update("tasks", id, {"status": "completed", "updated_at": _now()})


@app.mutation(name="deleteTask", optimistic="delete:tasks")
def delete_task(ctx: Ctx, id: int) -> dict[str, Any]:
    return ctx.db.delete("tasks", id)


@app.action(name="searchTasks")
async def search_tasks(
    ctx: Ctx, query: Annotated[str, StringConstraints(min_length=1, max_length=2000)], k: int = 10
) -> list[dict[str, Any]]:
    """The caller's tasks whose titles mean most nearly `query`, best first, each with its `_score`."""
    return await ctx.search("tasks", query, k)

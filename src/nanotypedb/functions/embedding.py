"""Embedded tables: which columns a table embeds, the text and hash of a row's embedded content, and its job."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from ..storage.schema import TableSchema

EMBED_JOB = "_embed"  # the built-in job that computes a row's vector
STATUS = "vector_status"  # pending → indexed | failed, as in the seed


def columns(schema: TableSchema) -> tuple[str, ...]:
    """The columns `embed=(...)` names on the table (empty: not embedded)."""
    return tuple(schema.options.get("embed") or ())


def text(schema: TableSchema, row: Mapping[str, Any]) -> str:
    """What is embedded: the embedded columns' values, one per line, empty ones left out."""
    return "\n".join(str(row[c]) for c in columns(schema) if row.get(c) not in (None, ""))


def content_hash(schema: TableSchema, row: Mapping[str, Any]) -> str:
    """Names the embedded content of a row: a job for older content is stale and must not write."""
    return hashlib.sha256(orjson.dumps([row.get(c) for c in columns(schema)], default=str)).hexdigest()

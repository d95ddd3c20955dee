"""The OpenAPI 3.1 description of every HTTP route, with one path per function."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..app import App
from ..errors import ALL_ERRORS
from ..functions.registry import Function

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": sorted({e.code for e in ALL_ERRORS})},
                "message": {"type": "string"},
                "details": {},
                "request_id": {"type": "string"},
            },
        }
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors() -> dict[str, Any]:
    statuses = sorted({e.status for e in ALL_ERRORS})
    return {str(s): {"$ref": "#/components/responses/Error"} for s in statuses}


# Nested models go to components/schemas: a `#/$defs/...` reference inside a path would
# resolve against the root of this document, where there is no `$defs`.
_REF_TEMPLATE = "#/components/schemas/{model}"


def _args_schema(fn: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = fn.args.model_json_schema(ref_template=_REF_TEMPLATE)
    schemas.update(schema.pop("$defs", {}))
    return schema


def _function_path(fn: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    ok = {"type": "object", "properties": {"data": {}, "version": {"type": "integer"}}}
    return {
        "post": {
            "operationId": fn.name,
            "summary": fn.description or f"{fn.kind.value} {fn.name}",
            "tags": [fn.kind.value],
            "security": [] if fn.public else [{"bearer": []}],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _args_schema(fn, schemas)}},
            },
            "responses": {"200": _json(ok, "The result and its version."), **_errors()},
        }
    }


def openapi(app: App, functions: Iterable[Function] | None = None) -> dict[str, Any]:
    """The document for `functions` (default: all of the app's)."""
    schemas: dict[str, Any] = {}
    listed = app.functions if functions is None else functions
    paths: dict[str, Any] = {f"/api/rpc/{fn.name}": _function_path(fn, schemas) for fn in listed}
    paths["/api/functions"] = {"get": {"summary": "List functions", "responses": {"200": {"description": "Functions"}}}}
    paths["/openapi.json"] = {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}}
    paths["/api/audit/export"] = {
        "get": {
            "summary": "Download the audit log, streamed (admin keys): format=csv|json|ndjson, since, until, actor, "
            "table",
            "responses": {"200": {"description": "The entries, oldest first"}},
        }
    }
    paths["/healthz"] = {"get": {"summary": "Process is up", "responses": {"200": {"description": "ok"}}}}
    paths["/ws"] = {
        "get": {
            "summary": "WebSocket: rpc, ping and auth messages (see docs/protocol.md)",
            "responses": {"101": {"description": "Switching protocols"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"NanoTypeDB: {app.name}", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": _json(_ERROR, "An error, in the one envelope.")},
        },
    }

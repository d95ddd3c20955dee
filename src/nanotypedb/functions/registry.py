"""The functions an app declares: their kind, their arguments as a validator, and how they may be called."""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from ..errors import ConfigError, MalformedMessage, ValidationFailed
from ..lib.ratelimit import Rate
from ..storage.schema import TableSchema, check_name
from .jobs import JobSpec
from .optimistic import Optimistic


class FunctionKind(enum.StrEnum):
    """A query reads a snapshot; a mutation runs in one transaction; an action may do anything else."""

    QUERY = "query"
    MUTATION = "mutation"
    ACTION = "action"


# Strict: `false` is not an int and "1" is not a number; unknown arguments are refused.
_STRICT = pydantic.ConfigDict(strict=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    kind: FunctionKind
    handler: Callable[..., Any]
    args: type[pydantic.BaseModel]
    public: bool = False
    rate: Rate | None = None
    optimistic: Optimistic | None = None
    description: str = ""
    # False for a query that reads what commits do not announce (the job queue's bookkeeping):
    # it is never answered from the cache, and cannot be subscribed to.
    cacheable: bool = True

    def parse_args(self, body: bytes | str) -> dict[str, Any]:
        """Validate JSON arguments against the signature.

        Raises MalformedMessage when the body is not JSON, ValidationFailed with each field's error otherwise.
        """
        try:
            # strict=True here, not only in the model's config, so that nested models are strict too.
            model = self.args.model_validate_json(body or b"{}", strict=True)
        except pydantic.ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors(include_url=False)):
                raise MalformedMessage(f"The arguments are not valid JSON: {_fields(exc)[0]['message']}.") from None
            raise ValidationFailed(
                f"Invalid arguments for {self.name!r}: {_summary(exc)}", details=_fields(exc)
            ) from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    def describe(self, tables: Mapping[str, TableSchema]) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "public": self.public,
            "args": self.args.model_json_schema(),
            "optimistic": self.optimistic.publish(tables) if self.optimistic is not None else None,
            "description": self.description,
        }


def _fields(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "(body)",
            "message": e["msg"],
            "type": e["type"],
        }
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _summary(exc: pydantic.ValidationError) -> str:
    first = _fields(exc)[0]
    more = exc.error_count() - 1
    return f"{first['field']}: {first['message']}" + (f" (and {more} more)" if more else "") + "."


def args_model(name: str, handler: Callable[..., Any]) -> type[pydantic.BaseModel]:
    """A pydantic model of every parameter after `ctx`, from the handler's type hints."""
    # include_extras keeps Annotated constraints (min_length, ge, …), which are part of the signature.
    hints = typing.get_type_hints(handler, include_extras=True)
    params = list(inspect.signature(handler).parameters.values())[1:]
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigError(f"Function {name!r}: *args and **kwargs are not allowed.")
        if p.name not in hints:
            raise ConfigError(f"Function {name!r}: parameter {p.name!r} needs a type hint.")
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints[p.name], default)
    model: type[pydantic.BaseModel] = pydantic.create_model(f"{name}_args", __config__=_STRICT, **fields)
    return model


class Registry:
    """Every function of an app, by name."""

    def __init__(self) -> None:
        self._functions: dict[str, Function] = {}
        self.jobs: dict[str, JobSpec] = {}  # job handlers by name

    def add_job(self, spec: JobSpec) -> None:
        if spec.name in self.jobs:
            raise ConfigError(f"Two job handlers are named {spec.name!r}.")
        self.jobs[spec.name] = spec

    def add(self, fn: Function) -> None:
        check_name(fn.name, "function name")
        if fn.name in self._functions:
            raise ConfigError(f"Two functions are named {fn.name!r}.")
        self._functions[fn.name] = fn

    def get(self, name: str) -> Function | None:
        return self._functions.get(name)

    def __iter__(self) -> Iterator[Function]:
        return iter(sorted(self._functions.values(), key=lambda f: f.name))

    def __len__(self) -> int:
        return len(self._functions)

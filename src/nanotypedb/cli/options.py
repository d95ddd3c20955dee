"""Command-line options made from the table of settings: each flag has its variable, default and help in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..settings import BY_NAME, SETTINGS, Setting

F = TypeVar("F", bound=Callable[..., Any])


def option(setting: Setting) -> Any:
    return click.option(
        setting.flag,
        setting.name,
        envvar=setting.env,
        default=setting.default,
        show_default=True,
        type=click.Choice(setting.choices, case_sensitive=False) if setting.choices else setting.type,
        help=f"{setting.help} [env: {setting.env}]",
    )


def with_settings(*names: str) -> Callable[[F], F]:
    """The options of these settings (all of them when none is named), in the table's order."""

    def decorate(fn: F) -> F:
        for setting in reversed([BY_NAME[n] for n in names] if names else list(SETTINGS)):
            fn = option(setting)(fn)
        return fn

    return decorate

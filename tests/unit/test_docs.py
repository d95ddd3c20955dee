"""The docs keep up with the code: every setting, error code, CLI command and public name is documented."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import click
import pytest

import nanotypedb
from nanotypedb.cli.main import cli
from nanotypedb.errors import ALL_ERRORS
from nanotypedb.settings import SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CLI_COMMANDS = ("serve", "keys create", "keys list", "keys revoke", "token", "env create", "env list", "env delete")


@cache
def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@cache
def all_docs() -> str:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def code_in(text: str) -> str:
    """The fenced blocks and inline code spans of a Markdown page: where API names belong."""
    fenced = re.findall(r"^ *```[^\n]*\n(.*?)^ *```", text, flags=re.M | re.S)
    without_fences = re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)
    inline = re.findall(r"`([^`\n]+)`", without_fences)
    return "\n".join([*fenced, *inline])


def mentions(code: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", code) is not None


def commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from commands(command, path + " ")
        else:
            yield path, command


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_in_configuration_md(setting: Setting) -> None:
    page = read("docs/configuration.md")
    assert f"`{setting.flag}`" in page, f"docs/configuration.md does not document {setting.flag}"
    assert f"`{setting.env}`" in page, f"docs/configuration.md does not document {setting.env}"


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda e: e.code)
def test_every_error_code_is_in_errors_md_with_its_status(error: type[nanotypedb.NanoTypeDBError]) -> None:
    row = re.compile(rf"^\| `{error.code}` \| {error.status} \|", re.M)
    assert row.search(read("docs/errors.md")), (
        f"docs/errors.md has no table row `| `{error.code}` | {error.status} | …` for {error.__name__}"
    )


def test_the_documented_commands_exist() -> None:
    assert set(CLI_COMMANDS) <= {path for path, _ in commands(cli)}


@pytest.mark.parametrize("path", sorted({path for path, _ in commands(cli)} | set(CLI_COMMANDS)))
def test_every_cli_command_is_documented(path: str) -> None:
    assert f"nanotypedb {path}" in all_docs(), f"no page of README.md or docs/ mentions `nanotypedb {path}`"


@pytest.mark.parametrize("path_and_command", list(commands(cli)), ids=lambda pc: pc[0])
def test_every_cli_option_is_documented(path_and_command: tuple[str, click.Command]) -> None:
    path, command = path_and_command
    flags = [opt for param in command.params for opt in getattr(param, "opts", []) if opt.startswith("--")]
    missing = [flag for flag in flags if f"`{flag}" not in all_docs()]
    assert not missing, f"`nanotypedb {path}` options missing from the docs: {missing}"


@pytest.mark.parametrize("name", nanotypedb.__all__)
def test_every_public_name_is_in_the_app_or_security_docs(name: str) -> None:
    code = code_in(read("docs/writing-an-app.md")) + "\n" + code_in(read("docs/auth-and-rls.md"))
    assert mentions(code, name), f"`{name}` is in nanotypedb.__all__ but not in writing-an-app.md or auth-and-rls.md"


def _isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions (ruff's RUF022 order), each alphabetically.
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted() -> None:
    assert nanotypedb.__all__ == sorted(nanotypedb.__all__, key=_isort_key)
    assert len(set(nanotypedb.__all__)) == len(nanotypedb.__all__)


def test_every_public_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from nanotypedb import *", namespace)
    missing = [name for name in nanotypedb.__all__ if name not in namespace]
    assert not missing, f"listed in __all__ but not importable: {missing}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _links() -> Iterator[tuple[Path, str]]:
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+:", target):
                yield page, target


@pytest.mark.parametrize(("page", "target"), list(_links()), ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.name} links to {target}, which does not exist"
    if anchor:
        assert anchor in _anchors(linked), f"{page.name} links to {target}: no such heading in {linked.name}"


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(nanotypedb).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(nanotypedb.__all__), f"public but not in __all__: {sorted(public - set(nanotypedb.__all__))}"

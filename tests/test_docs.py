"""The documented command lines keep up with the code (issue 26): every option of
`labelsd` (its argparse parser) and of every `labels` command and subcommand (the
Typer app), found by introspection, is in the synopsis of docs/contract.md, on
its own command's entry; `labelsd`'s are in README.md's synopsis too. A new
command or option fails here until it is documented.

The synopsis (the first code block under "## The two commands"): an entry per
command. `labelsd ...` and `labels ...` start at the left margin; each `labels`
command starts two spaces in with its name (`  search QUERY ...`, `  xmp write
...`), and lines indented further continue the entry above.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from clitree import leaves
from labels_cli.app import GLOBAL_AFTER_OPTIONS, app
from labelsd.service import build_parser

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO / "docs" / "contract.md"
README = REPO / "README.md"
UNIVERSAL = {"-h", "--help"}  # every command has them
# `--db` and `--config` are global options that every command also takes after its
# name: the `labels` entry documents them once.
AFTER_THE_COMMAND = {option for option, _, _ in GLOBAL_AFTER_OPTIONS}


def _code_block_after(text: str, heading: str, starts: str) -> str:
    """The first fenced code block after `heading` whose text starts with `starts`."""
    after = text.split(heading, 1)[1]
    for block in re.findall(r"```[a-z]*\n(.*?)```", after, flags=re.S):
        if block.lstrip().startswith(starts):
            return block
    raise AssertionError(f"no code block starting {starts!r} after {heading!r}")


def synopsis_entries(block: str) -> dict[str, str]:
    """Entry name ("labelsd", "labels", "search", "xmp write") -> its text."""
    entries: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        if not line.strip():
            name = None
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            name = line.split()[0]
        elif indent == 2:
            name = " ".join(re.findall(r"^[a-z][a-z-]*(?: [a-z][a-z-]*)?", line.strip())[0].split()[:2])
            name = _command_name(name)
        if name is None:
            raise AssertionError(f"a line belongs to no entry: {line!r}")
        entries[name] = entries.get(name, "") + " " + line.strip()
    return entries


def _command_name(words: str) -> str:
    """"xmp write" for a two-word command path, "search" for one word followed by text."""
    first = words.split()[0]
    return words if first in GROUPS else first


ROOT = get_command(app)
GROUPS = {name for name, sub in ROOT.commands.items() if hasattr(sub, "commands")}
LEAVES = leaves(ROOT)


def _options(params) -> list[tuple[str, ...]]:
    """Each option's names (`-t`, `--tag`), but the universal ones and the global
    options every command also takes after its name."""
    found = []
    for param in params:
        if param.param_type_name != "option":
            continue
        names = tuple(o for o in (*param.opts, *param.secondary_opts))
        if not set(names) & (UNIVERSAL | AFTER_THE_COMMAND):
            found.append(names)
    return found


def _missing(entry: str, options: list[tuple[str, ...]]) -> list[str]:
    """The options none of whose names the entry mentions (by their longest name)."""
    return [max(names, key=len) for names in options if not any(_mentions(entry, n) for n in names)]


def _mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def _contract() -> dict[str, str]:
    return synopsis_entries(_code_block_after(CONTRACT.read_text(encoding="utf-8"),
                                              "## The two commands", "labelsd"))


def test_the_synopsis_reads_as_entries():
    entries = _contract()
    assert {"labelsd", "labels", "search", "xmp write", "db copy"} <= set(entries)


@pytest.mark.parametrize("path, command", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_labels_command_and_option_is_in_the_contract(path, command):
    entries = _contract()
    name = " ".join(path)
    assert name in entries, f"docs/contract.md's synopsis has no entry for `labels {name}`"
    missing = _missing(entries[name], _options(command.params))
    assert not missing, f"`labels {name}` options missing from docs/contract.md: {missing}"


def test_the_global_options_of_labels_are_in_the_contract():
    entry = _contract()["labels"]
    missing = _missing(entry, _options(ROOT.params) + [(o,) for o in AFTER_THE_COMMAND])
    assert not missing, f"`labels` options missing from docs/contract.md: {missing}"


def _labelsd_options() -> list[tuple[str, ...]]:
    return [tuple(action.option_strings) for action in build_parser()._actions
            if action.option_strings and not set(action.option_strings) & UNIVERSAL]


@pytest.mark.parametrize("where", ["docs/contract.md", "README.md"])
def test_every_labelsd_option_is_in_the_synopsis(where):
    if where == "README.md":
        block = _code_block_after(README.read_text(encoding="utf-8"), "## The service", "labelsd")
        entry = " ".join(block.split())
    else:
        entry = _contract()["labelsd"]
    options = _labelsd_options()
    assert len(options) >= 12
    missing = _missing(entry, options)
    assert not missing, f"labelsd options missing from {where}'s synopsis: {missing}"


def test_the_introspection_sees_every_option():
    """A check of the check: it finds options that are there, and would miss none."""
    search = dict(LEAVES)[("search",)]
    assert {"--min-score", "--exact", "--tag", "--limit", "--json", "--csv", "--paths", "-0", "--null", "--since",
            "--until", "--camera", "--include-missing"} == {n for names in _options(search.params) for n in names}
    assert ("--version",) in _options(ROOT.params) and ("--precision",) in _labelsd_options()
    assert AFTER_THE_COMMAND == {"--db", "--config"}
    entries = synopsis_entries("labels [--db X] COMMAND\n  search QUERY [--json]\n"
                               "         [--csv]\n  xmp write [QUERY]\n")
    assert entries["search"] == " search QUERY [--json] [--csv]" and "xmp write" in entries
    assert not _mentions("[--json-lines]", "--json") and _mentions("[--json | --csv]", "--csv")


def test_every_route_of_labels_serve_is_in_the_contract():
    """docs/contract.md's table of addresses names every route of web/app.py (its
    shipped assets aside), with `<name>` for a path parameter."""
    from types import SimpleNamespace

    from labelsd.web.app import create_app

    site = SimpleNamespace(templates=SimpleNamespace(globals={}))
    paths = [re.sub(r"\{(\w+)(?::\w+)?\}", r"<\1>", route.path) for route in create_app(site).routes]
    table = CONTRACT.read_text(encoding="utf-8").split("## The web interface (`labels serve`)", 1)[1]
    table = "\n".join(line for line in table.splitlines() if line.startswith("| `"))
    cited = set(re.findall(r"`(/[^`?\s]*)", table))
    assert "/photo/<sha256>/labels/<class_index>/reject" in paths
    assert [p for p in paths if p not in cited and not p.startswith("/static/")] == []

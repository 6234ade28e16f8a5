"""The `labels` command tree, walked: for the tests that check every command or option
(help, completion, the global options, the contract's synopsis)."""

from __future__ import annotations


def walk(command, prefix=()):
    """(path, command) for `command` and every group and command below it, by name."""
    yield prefix, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*prefix, name))


def leaves(command) -> list[tuple[tuple[str, ...], object]]:
    """(path, command) for each command below `command` that is not a group."""
    return [(path, sub) for path, sub in walk(command) if path and not hasattr(sub, "commands")]

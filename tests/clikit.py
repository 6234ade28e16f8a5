"""The `labels` CLI in-process, for tests: `labels(db_url, *args)` runs one command
through typer's CliRunner, `ok(result)` asserts it exited 0 and gives its stdout."""

from __future__ import annotations

from typer.testing import CliRunner

from labels_cli.app import app

runner = CliRunner()


def labels(db_url, *args, config=None):
    return runner.invoke(app, ["--db", db_url, *(["--config", str(config)] if config else []), *args])


def ok(result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout

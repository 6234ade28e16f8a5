"""The CLI's foundation: global options, the error boundary, exit codes."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from labels_cli.app import app
from labelsd.store.engine import open_store

runner = CliRunner()


def _bad_dir(tmp_path):
    path = tmp_path / "adir"
    path.mkdir()
    return path


def _not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"definitely not sqlite\n" * 50)
    return path


def _under_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    return blocker / "sub" / "labels.db"


@pytest.mark.parametrize("make_db, command, fragment", [
    (_bad_dir, "list", "is a directory"),
    (_bad_dir, "retry", "is a directory"),
    (_not_a_database, "list", "not a labelsd database"),
    (_not_a_database, "retry", "not a labelsd database"),
    (_under_a_file, "list", "no database at"),  # a command that only reads creates nothing
    (_under_a_file, "retry", "no database at"),  # nor does one that writes
])
def test_bad_db_is_one_line_and_exit_1(tmp_path, make_db, command, fragment):
    result = runner.invoke(app, ["--db", str(make_db(tmp_path)), command])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("labels: error:")
    assert "Traceback" not in result.output + result.stderr


def test_bad_config_is_one_line_and_exit_1(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("this is = = not toml")
    result = runner.invoke(app, ["--config", str(cfg), "list"])
    assert result.exit_code == 1
    assert "not valid TOML" in result.stderr and "Traceback" not in result.stderr


def test_db_from_environment(tmp_path, monkeypatch):
    db = tmp_path / "env.db"
    monkeypatch.setenv("LABELS_DB", str(db))
    refused = runner.invoke(app, ["retry"])  # a command that writes creates nothing either
    assert refused.exit_code == 1 and f"no database at {db}" in refused.stderr
    assert not db.exists()
    open_store(str(db)).close()
    assert runner.invoke(app, ["retry"]).exit_code == 0
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0 and result.stdout.strip() == "[]"


def test_usage_error_exits_2(tmp_path):
    result = runner.invoke(app, ["--db", str(tmp_path / "x.db"), "list", "--status", "bogus"])
    assert result.exit_code == 2


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_top_level_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert {"list", "show", "search", "tag", "export"} <= {path[0] for path, _ in ALL_COMMANDS}
    for path, _ in ALL_COMMANDS:
        assert path[0] in result.stdout


@pytest.mark.parametrize("path, command", ALL_COMMANDS, ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_every_command_and_option_has_help(path, command):
    assert command.help, f"`labels {' '.join(path)}` has no help text"
    assert not [p.name for p in command.params if hasattr(p, "help") and not p.help]
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.stdout


def test_show_explains_an_untracked_file_under_a_symlinked_root(tmp_path):
    # The watcher resolves a root that is itself a symlink; `show` must too, or
    # every file under such a root reads as "outside the watched folders".
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (real / "a.jpg").write_bytes(b"x")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'watch = ["{tmp_path / "link"}"]\n')
    open_store(str(tmp_path / "x.db")).close()
    result = runner.invoke(app, ["--config", str(cfg), "--db", str(tmp_path / "x.db"),
                                 "show", str(tmp_path / "link" / "a.jpg")])
    assert result.exit_code == 1 and result.stdout == ""
    assert "untracked (not seen by labelsd yet)" in result.stderr, result.stderr


@pytest.mark.parametrize("url, says", [
    ("postgresql+psycopg://ana:secret@dbhost/labels", "the PostgreSQL driver psycopg is not installed"),
    ("postgresql+psycopg2://ana:secret@dbhost/labels", "write postgresql+psycopg://"),
])
def test_a_missing_database_driver_says_what_to_install(monkeypatch, url, says):
    # Issue 26: it said "No module named 'psycopg'".
    import sys

    for driver in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, driver, None)  # as if not installed
    result = runner.invoke(app, ["--db", url, "list"])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert says in line and "-m pip install 'psycopg[binary]>=3.1'" in line, line
    assert "make install EXTRAS=postgres" in line and "secret" not in line


def test_a_database_url_s_password_stays_out_of_messages():
    result = runner.invoke(app, ["--db", "postgresql+psycopg://ana:secret@nohost.invalid/labels", "list"])
    assert result.exit_code == 1 and "secret" not in result.stderr and "ana:***@" in result.stderr

"""Issue 32, items 2 and 4: a file name can never start a new line or a new journal
entry, nor move the cursor back over what a line said. Every place that shows a name
(the service's log, the CLI's messages, its tables) escapes control characters the way
`labelsd.paths.shown` does; the log formatters escape whatever a message holds, so a
log call that forgot `shown` still writes one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen import make_image
from labelsd import journal
from labelsd.paths import one_line, shown
from labelsd.store.engine import open_store
from servicekit import Service

FORGED = "2026-12-06 01:06:00 ERROR labelsd: the database is corrupt, labelsd stopped"
HOSTILE = f"fake\n{FORGED}.jpg"
CR = "cr\rOVERWRITTEN.jpg"


@pytest.mark.parametrize(("name", "seen"), [
    ("cat.jpg", "cat.jpg"),
    ("café 猫 🐈.jpg", "café 猫 🐈.jpg"),  # printable Unicode stays as it is
    ("a\nb.jpg", "a\\nb.jpg"),
    (CR, "cr\\rOVERWRITTEN.jpg"),
    ("tab\there.jpg", "tab\\there.jpg"),
    ("\x1b[2J\x1b[31mred.jpg", "\\x1b[2J\\x1b[31mred.jpg"),  # ESC: no terminal sequences
    ("bell\x07.jpg", "bell\\x07.jpg"),
    ("vt\x0bff\x0cfs\x1c.jpg", "vt\\x0bff\\x0cfs\\x1c.jpg"),  # str.splitlines() splits on these
    ("del\x7f.jpg", "del\\x7f.jpg"),
    ("nel\x85csi\x9b.jpg", "nel\\u0085csi\\u009b.jpg"),  # C1, as code points
    ("ls\u2028ps\u2029.jpg", "ls\\u2028ps\\u2029.jpg"),
    ("gpj.\u202eexe", "gpj.\\u202eexe"),  # a right-to-left override: no reordered line
    ("back\\slash.jpg", "back\\\\slash.jpg"),  # doubled: an escape is never ambiguous
    (os.fsdecode(b"caf\xe9\n.jpg"), "caf\\xe9\\n.jpg"),  # bytes that are not UTF-8
])
def test_a_name_is_shown_on_one_line_and_unambiguously(name, seen):
    assert shown(name) == seen
    assert len(shown(name).splitlines()) == 1 and shown(name).isprintable()


def test_free_text_keeps_its_backslashes_but_not_its_line_breaks():
    text = f"cannot read {HOSTILE} (C:\\photos)\r\x1b[2K"
    assert one_line(text) == f"cannot read fake\\n{FORGED}.jpg (C:\\photos)\\r\\x1b[2K"
    assert one_line(shown(HOSTILE)) == shown(HOSTILE)  # a shown name is not escaped twice


def _record(msg, *args, exc_info=None, level=logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("labelsd.pipeline.writer", level, __file__, 1, msg, args, exc_info)


def _formatter(monkeypatch, journal_stream: bool) -> logging.Formatter:
    """The formatter the service's own logging uses, on a terminal or under systemd."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    if journal_stream:
        monkeypatch.setenv("JOURNAL_STREAM", "8:123")
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    try:
        journal.configure_logging("info")
        return root.handlers[0].formatter
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _raised(message: str):
    try:
        try:
            raise OSError(f"cannot open {message}")
        except OSError as err:
            raise RuntimeError(f"while labelling {message}") from err
    except RuntimeError:
        return sys.exc_info()


@pytest.mark.parametrize("journal_stream", [False, True], ids=["terminal", "journal"])
def test_the_service_log_writes_one_line_whatever_a_name_holds(monkeypatch, journal_stream):
    fmt = _formatter(monkeypatch, journal_stream)
    for name in (HOSTILE, CR, "\x85" + FORGED, "\u2028" + FORGED, "\x1c" + FORGED):
        text = fmt.format(_record("labeled %s: %s", name, "tabby 0.91"))
        assert "\n" not in text and "\r" not in text and "\x1b" not in text, text
        assert text.isprintable(), text
        if journal_stream:
            assert text.startswith("<6>labelsd.pipeline.writer: labeled "), text
    # A traceback keeps its lines, but a name in an exception's message starts none
    text = fmt.format(_record("cannot record %s", HOSTILE, exc_info=_raised(HOSTILE), level=logging.ERROR))
    lines = text.split("\n")
    assert len(lines) > 4 and not [line for line in lines if FORGED in line.split(": ", 1)[0]], lines
    assert not [line for line in lines if line.lstrip("<3>").startswith(FORGED)], lines
    assert all(line.isprintable() for line in lines), lines
    if journal_stream:  # each line its own entry, all at the record's priority
        assert all(line.startswith("<3>") for line in lines), lines


def test_the_journal_gets_one_entry_per_line_at_the_records_priority(monkeypatch):
    fmt = _formatter(monkeypatch, journal_stream=True)
    text = fmt.format(_record("not tracking %s: %s", HOSTILE, "its name is not valid UTF-8",
                              level=logging.WARNING))
    assert text == f"<4>labelsd.pipeline.writer: not tracking fake\\n{FORGED}.jpg: its name is not valid UTF-8"


def test_labels_scan_shows_a_hostile_name_on_one_line(tmp_path):
    """`labels scan` over a folder holding a name that is not UTF-8 and holds a newline:
    its warning (above the progress bar, on stderr) is one line."""
    folder = tmp_path / "photos"
    folder.mkdir()
    hostile = os.path.join(os.fsencode(folder), b"caf\xe9\n" + FORGED.encode() + b".jpg")
    with open(hostile, "wb") as f:
        f.write(b"not even an image")
    env = {**os.environ, "LANG": "C.UTF-8"}
    done = subprocess.run([sys.executable, "-m", "labels_cli.app", "--db", str(tmp_path / "l.db"),
                           "scan", str(folder)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith(FORGED)], done.stderr
    assert f"caf\\xe9\\n{FORGED}.jpg" in done.stderr, done.stderr


def test_an_error_naming_a_hostile_path_is_one_line(tmp_path):
    """The CLI's error boundary: whatever a named error's message holds, one line."""
    db = tmp_path / "l.db"
    env = {**os.environ, "LANG": "C.UTF-8"}
    labels = [sys.executable, "-m", "labels_cli.app", "--db", str(db)]
    open_store(str(db)).close()  # a library: only the service and scan create one (issue 26)
    missing = str(tmp_path / f"gone\r{FORGED}.jpg")
    done = subprocess.run([*labels, "tag", missing, "x"], capture_output=True, timeout=60, env=env)
    said = done.stderr.decode()  # as it is: no newline translation
    assert done.returncode == 1 and said.count("\n") == 1, repr(said)
    assert "\r" not in said and f"gone\\r{FORGED}.jpg" in said, repr(said)


def test_the_service_says_an_error_naming_a_hostile_path_in_one_journal_entry(tmp_path):
    labelsd = Path(sys.executable).with_name("labelsd")
    done = subprocess.run([str(labelsd), "--config", str(tmp_path / f"gone\n{FORGED}.toml")],
                          capture_output=True, timeout=60, env={**os.environ, "JOURNAL_STREAM": "8:1"})
    said = done.stderr.decode()
    assert done.returncode == 1 and said.count("\n") == 1 and FORGED in said, repr(said)


def _write_log_check(raw: bytes, names: list[str]) -> None:
    log = raw.decode()  # as written: no newline translation
    lines = log.split("\n")
    assert "\r" not in log and not [line for line in lines if line.startswith(FORGED)], log[-3000:]
    ours = [line for line in lines if "OVERWRITTEN" in line or FORGED in line]
    assert ours and all(line.isprintable() for line in ours), ours
    for name in names:
        assert f"labeled {shown(name)}: " in log, log[-3000:]


def test_a_service_run_logs_hostile_names_on_one_line_each(tmp_path, weights_file):
    """The issue's reproduction: a photo named `fake` + newline + a timestamped ERROR
    line, and one with a carriage return. The service's log has no forged line, and
    says each name escaped."""
    home = Path(os.path.realpath(tmp_path))
    inbox = home / "inbox"
    inbox.mkdir()
    svc = Service(home, db=home / "labels.db", weights=weights_file, watch=[inbox])
    svc.start().wait_ready()
    try:
        names = [HOSTILE, CR, "ls\u2028" + FORGED + ".jpg"]
        paths = []
        for i, name in enumerate(names):
            staged = make_image(home / f"staged{i}.jpg", size=(64, 48), seed=i)
            paths.append(inbox / name)
            os.rename(staged, paths[-1])
        svc.wait_settled(paths, 180)
    finally:
        assert svc.stop(30) == 0, svc.tail()
    _write_log_check(svc.log_path.read_bytes(), names)


# A log call's argument named like one of these is a path or a name: it goes through
# shown() (the formatters would keep the line whole anyway; shown also makes it
# unambiguous, and says where names are).
PATHISH = {"path", "root", "folder", "target", "cached", "tflite", "weights_path", "where",
           "cache", "full", "src_path", "dest_path", "filename"}
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _unshown(tree) -> list[str]:
    import ast

    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("log", "logger")):
            continue
        for arg in node.args[1:]:
            ident = arg.id if isinstance(arg, ast.Name) else arg.attr if isinstance(arg, ast.Attribute) else None
            if ident in PATHISH:
                found.append(f"line {node.lineno}: {ast.unparse(arg)}")
    return found


def test_every_log_call_shows_the_paths_it_names():
    import ast

    repo = Path(__file__).resolve().parent.parent
    unshown = {}
    for path in [*(repo / "daemon").rglob("*.py"), *(repo / "cli").rglob("*.py")]:
        found = _unshown(ast.parse(path.read_text(encoding="utf-8")))
        if found:
            unshown[str(path.relative_to(repo))] = found
    assert not unshown, unshown

"""The Makefile's promises, run with a stand-in Python (no venv, no pip, no network):
`make run` says what it installs before pip runs and hands MODEL= on, pip's
setuptools box is filtered, `make uninstall` takes the shell completion away, and
every hint to install an optional part is a command that works from this checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from labelsd.extras import EXTRAS, install_command, installed_from

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

# Stands in for python3 and the venv's python: records its arguments (and the one
# environment variable the Makefile sets for pip), and makes a "venv" of itself.
FAKE_PYTHON = """#!/bin/sh
echo "FAKE $* PYTHONWARNINGS=$PYTHONWARNINGS"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi
exit 0
"""


def make(tmp_path: Path, *args: str, python: str | None = None) -> list[str]:
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    done = subprocess.run(["make", "--no-print-directory", *args, f"PYTHON={python or fake}",
                           f"VENV={tmp_path / 'venv'}", f"WATCH={tmp_path / 'inbox'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MAKEFLAGS": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_make_run_says_what_it_installs_before_pip_and_hands_on_the_model(tmp_path):
    lines = make(tmp_path, "run", "MODEL=efficientnet_lite0", "EXTRAS=postgres")
    said = next(i for i, line in enumerate(lines) if line.startswith("make run: installing labelsd"))
    pip = [i for i, line in enumerate(lines) if line.startswith("FAKE -m pip")]
    assert pip and said < pip[0], lines
    assert all(lines[i].endswith("PYTHONWARNINGS=ignore:Editable installation") for i in pip), lines
    assert any("-e .[postgres]" in lines[i] for i in pip), lines
    [wrapper] = [line for line in lines if line.startswith("FAKE scripts/make_run.py")]
    assert "--model efficientnet_lite0 -- " in wrapper, wrapper
    # a second run installs nothing again; other EXTRAS do
    assert not any(line.startswith("FAKE -m pip") for line in make(tmp_path, "run", "EXTRAS=postgres"))
    assert any(line.startswith("FAKE -m pip") for line in make(tmp_path, "run", "EXTRAS=metrics"))


def test_make_uninstall_removes_the_shell_completion(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text('alias ll="ls -l"\n')
    labels = Path(sys.executable).with_name("labels")
    # From bash, as a person runs it (Typer asks the process tree which shell); `; true`
    # keeps bash from handing its process over to labels.
    installed = subprocess.run(["bash", "-c", f"'{labels}' --install-completion; true"],
                               capture_output=True, text=True, timeout=60,
                               env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                                    "LABELS_CONFIG": os.environ["LABELS_CONFIG"]})
    assert "bash completion installed" in installed.stdout, installed.stdout + installed.stderr
    script = home / ".bash_completions" / "labels.sh"
    assert script.is_file() and f"source '{script}'" in (home / ".bashrc").read_text()
    mine = home / ".local" / "share" / "bash-completion" / "completions" / "labels"
    mine.parent.mkdir(parents=True)
    mine.write_text(subprocess.run([str(labels)], capture_output=True, text=True, timeout=60,
                                   env={**os.environ, "_LABELS_COMPLETE": "source_bash"}).stdout)
    other = mine.with_name("git")
    other.write_text("# git's own\n")

    lines = make(tmp_path, "uninstall", f"HOME={home}", f"INSTALL_DIR={tmp_path / 'share'}",
                 f"BINDIR={tmp_path / 'bin'}", python=sys.executable)
    assert not script.exists() and not script.parent.exists() and not mine.exists()
    assert (home / ".bashrc").read_text() == 'alias ll="ls -l"\n'  # as it was before
    assert other.read_text() == "# git's own\n"
    assert sum("removed the shell completion of labels" in line for line in lines) == 3, lines


def test_every_extra_is_documented_for_make_install():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert set(EXTRAS) == extras - {"test"}
    makefile = (ROOT / "Makefile").read_text()
    documented = makefile[makefile.index("# The optional parts"):makefile.index("INSTALL_DIR ?=")]
    for extra in EXTRAS:
        assert re.search(rf"#.*\b{extra}\b", documented), extra


def test_no_hint_names_a_package_index_labelsd_is_not_on():
    """labelsd is not on PyPI: `pip install 'labelsd[lite]'` cannot work anywhere."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    pattern = re.compile(r"pip\s+install\s+'?labelsd\[")
    offenders = [name for name in tracked if name != "tests/test_makefile.py"
                 and (ROOT / name).is_file() and pattern.search((ROOT / name).read_text(errors="replace"))]
    assert offenders == []


def test_a_hint_installs_the_extra_from_where_labelsd_came_from():
    source = installed_from()
    assert source is not None and Path(source[0]) == ROOT and source[1] is True  # this editable checkout
    command = install_command("metrics")
    assert command == f"{sys.executable} -m pip install -e '{ROOT}[metrics]'"
    for help_of in (["labelsd", "-h"], ["labels", "scan", "-h"]):
        shown = subprocess.run([str(Path(sys.executable).with_name(help_of[0])), *help_of[1:]],
                               capture_output=True, text=True, timeout=60).stdout
        assert "efficientnet_lite0" in shown and "pip install" not in shown, help_of


def test_uninstall_edits_a_symlinked_bashrc_through_its_link(tmp_path):
    """A dotfiles manager keeps ~/.bashrc as a symlink: the line leaves its target, and the
    link stays a link. Someone else's completion file of that name stays."""
    home = tmp_path / "home"
    (home / "dotfiles").mkdir(parents=True)
    source_line = f"source '{home / '.bash_completions' / 'labels.sh'}'"
    (home / "dotfiles" / "bashrc").write_text(f"export A=1\n\n{source_line}\nexport B=2\n")
    (home / ".bashrc").symlink_to("dotfiles/bashrc")
    (home / ".zfunc").mkdir()
    (home / ".zfunc" / "_labels").write_text("#compdef labels: another program's\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "uninstall_completion.py"), str(home)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (home / ".bashrc").is_symlink()
    assert (home / "dotfiles" / "bashrc").read_text() == "export A=1\nexport B=2\n"
    assert (home / ".zfunc" / "_labels").exists()

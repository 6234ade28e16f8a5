"""`make uninstall`: remove the shell completion of `labels` from a home folder.

    python scripts/uninstall_completion.py [HOME]

`labels --install-completion` (Typer) writes the completion script to
~/.bash_completions/labels.sh and adds `source '<that file>'` to ~/.bashrc (bash),
~/.zfunc/_labels (zsh), or ~/.config/fish/completions/labels.fish (fish); the README's
other way writes ~/.local/share/bash-completion/completions/labels. Each of these
files is removed when it is labels' completion (it names _LABELS_COMPLETE), and the
`source` line (with the blank line Typer put before it) leaves ~/.bashrc; nothing
else in ~/.bashrc changes. ~/.zshrc keeps the generic `fpath+=~/.zfunc ... compinit`
line Typer may have added: other programs' completions may rely on it. Prints what
it removed. Standard library only: it runs after labels' own venv is gone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MARKER = "_LABELS_COMPLETE"  # in every completion script of `labels`, whatever the shell
SCRIPTS = (".bash_completions/labels.sh", ".zfunc/_labels", ".config/fish/completions/labels.fish",
           ".local/share/bash-completion/completions/labels")


def _is_labels_completion(path: Path) -> bool:
    try:
        return path.is_file() and MARKER in path.read_text(errors="replace")
    except OSError:
        return False


def remove_completion(home: Path) -> list[str]:
    """Remove labels' completion from `home`; returns what was removed, in words."""
    removed = []
    for relative in SCRIPTS:
        script = home / relative
        if _is_labels_completion(script):
            script.unlink()
            removed.append(str(script))
            if script.parent.name == ".bash_completions":  # Typer's own folder, if now empty
                try:
                    script.parent.rmdir()
                except OSError:
                    pass
    bashrc = home / ".bashrc"
    source_line = f"source '{home / '.bash_completions' / 'labels.sh'}'"
    try:
        lines = bashrc.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return removed
    kept: list[str] = []
    for line in lines:
        if line.strip() == source_line:
            if kept and kept[-1].strip() == "":
                kept.pop()  # the blank line Typer wrote before it
            removed.append(f"the line {source_line!r} in {bashrc}")
            continue
        kept.append(line)
    if len(kept) != len(lines):
        target = bashrc.resolve()  # a dotfiles manager's symlink stays a symlink
        tmp = target.with_name(f".bashrc.labels-uninstall-{os.getpid()}")
        try:
            tmp.write_text("".join(kept))
            os.chmod(tmp, target.stat().st_mode & 0o7777)
            os.replace(tmp, target)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            removed.pop()
            print(f"could not edit {bashrc} ({err.strerror}): remove the line {source_line!r} yourself",
                  file=sys.stderr)
    return removed


def main(argv: list[str]) -> int:
    home = Path(argv[0] if argv else os.path.expanduser("~"))
    for what in remove_completion(home):
        print(f"removed the shell completion of labels: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

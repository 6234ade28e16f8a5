"""Run a command that drops privileges where the other user can reach what it runs.

Tests that run code as another user (setpriv: test_access, test_watch_perms,
test_install) run this checkout's code with this venv's interpreter and
packages. In a clone under a folder only root may enter (`mktemp -d` makes it
0700; so is /root, where pyenv or a venv may live), the other user cannot
reach any of it. Rather than copying the venv (gigabytes, with TensorFlow) or
changing the person's folders, the command runs in a private mount namespace in
which each such folder is replaced by a world-traversable stand-in: a tmpfs
holding a bind mount of every entry of the original. The same paths, the same
files, and the same modes below; nothing changes outside the namespace, and it
ends with the command.

    wrap(argv)                 argv, or argv in such a namespace when needed
    opening_argv()             what opens the way inside a namespace made elsewhere
    python reachable.py FOLDER... -- ARGV...    (what wrap runs, as root)
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def needed_paths() -> list[str]:
    """What a dropped-privilege child of this test run uses: the checkout, the venv,
    its packages and the interpreter behind it."""
    paths = {str(ROOT), sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)}
    paths.update(sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib"))
    return sorted(paths)


def blocked_folders(paths: list[str] | None = None) -> list[str]:
    """The folders above `paths` that other users may not traverse (no o+x), top-down."""
    blocked: set[str] = set()
    for path in paths if paths is not None else needed_paths():
        real = Path(os.path.realpath(path))
        for folder in reversed([real, *real.parents] if real.is_dir() else list(real.parents)):
            if not folder.stat().st_mode & stat.S_IXOTH:
                blocked.add(str(folder))
    return sorted(blocked, key=lambda f: (f.count("/"), f))


def available() -> str | None:
    """Why such a namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "mount namespaces need root"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"no mount namespaces here: {probe.stderr.decode().strip()}"
    return None


def wrap(argv: list[str], paths: list[str] | None = None) -> list[str]:
    """`argv` unchanged when every needed path is reachable; else argv run in a private
    mount namespace where the folders in the way are world-traversable stand-ins
    (the test is skipped where no such namespace can be made)."""
    opening = opening_argv(paths)
    if opening is None:
        return argv
    return ["unshare", "--mount", "--propagation", "private", "--", *opening[:-1], *argv]


def opening_argv(paths: list[str] | None = None) -> list[str] | None:
    """The command that, run as root in a mount namespace, makes `paths` reachable there
    (`python reachable.py FOLDER... -- true`); None when nothing is in the way."""
    blocked = blocked_folders(paths)
    if not blocked:
        return None
    why = available()
    if why is not None:
        import pytest

        pytest.skip(f"{', '.join(blocked)} may not be entered by other users, and {why}")
    return [sys.executable, str(Path(__file__).resolve()), *blocked, "--", "true"]


def open_up(folder: str) -> None:
    """Replace `folder`, in this mount namespace, by a 0755 tmpfs that holds a bind
    mount of each of its entries (reached through a descriptor of the original)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    entries = os.listdir(fd)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "labelsd-test", folder], check=True)
    for name in entries:
        # through this process's descriptor: `mount` is another process
        source, target = f"/proc/{os.getpid()}/fd/{fd}/{name}", os.path.join(folder, name)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            continue
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            open(target, "w").close()
        subprocess.run(["mount", "--no-canonicalize", "--rbind", source, target], check=True)
    os.close(fd)


def main(args: list[str]) -> int:
    split = args.index("--")
    for folder in args[:split]:
        open_up(folder)
    argv = args[split + 1:]
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

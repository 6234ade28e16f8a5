"""Which paths labelsd tracks. One rule set, used by the watcher, the start-up
scan, `labels scan` and `labels show` (to explain why a path is untracked)."""

from __future__ import annotations

import os
from collections.abc import Iterable

# Extensions that count as images by name (images.py decodes them).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",
        ".png", ".apng", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
        ".heic", ".heif", ".hif", ".avif",
    }
)  # fmt: skip

# Names that browsers, sync tools and editors give files still being written.
PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp",
                    ".!qb", ".opdownload", ".filepart", "~")


def canonical_path(path: str | os.PathLike) -> str:
    """The absolute path under which a file is stored: its folder resolved
    (symlinks, `..`), its own name kept, so a missing file still resolves.
    The one owner of path normalisation (the store re-exports it)."""
    absolute = os.path.abspath(os.path.expanduser(os.fspath(path)))
    folder, name = os.path.split(absolute)
    return os.path.join(os.path.realpath(folder), name)


def canonical_root(folder: str | os.PathLike) -> str:
    """A watched folder as the watcher records it: `canonical_path`, and the
    folder's own name resolved too (a root that is a symlink is watched at its
    target, so the paths under it are the ones `canonical_path` gives its files)."""
    return os.path.realpath(canonical_path(folder))


def under_root(path: str, root: str) -> bool:
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root + os.sep) or root == os.sep


def ignore_reason(path: str, roots: Iterable[str] | None = None) -> str | None:
    """Why `path` is not tracked, in words, or None when it is a candidate image.

    Hidden means any component below the watched root starts with a dot (so a
    `.thumbnails/` folder inside the root is skipped, but a root that itself
    lives under `~/.local` still works)."""
    roots = [r for r in (roots or ())]
    inside = [r for r in roots if under_root(path, r)]
    if roots and not inside:
        return "outside the watched folders"
    relative = os.path.relpath(path, max(inside, key=len)) if inside else os.path.basename(path)
    name = os.path.basename(path)
    if name.startswith("._"):
        return "AppleDouble metadata file"
    if any(part.startswith(".") and part not in (".", "..")
           for part in relative.split(os.sep)):
        return "hidden file or folder"
    lowered = name.lower()
    if lowered.endswith(PARTIAL_SUFFIXES):
        return "temporary or partial file (still being written)"
    if not is_image_name(name):
        return "not an image by name"
    if not is_text(path):
        return NOT_UTF8
    return None


# Paths are stored as text (SQLite and PostgreSQL both insist on valid UTF-8);
# a name with other bytes (Latin-1 `caf\xe9.jpg` from an old camera or a Samba
# share) cannot be, so it is not tracked, and is reported once by name.
NOT_UTF8 = "its name is not valid UTF-8 (rename it to track it)"


def is_text(path: str) -> bool:
    """False for a path holding bytes that are not UTF-8 (decoded by Python as
    lone surrogates, `os.fsdecode`'s surrogateescape)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str) -> str:
    """`path` as a log line or a person can read it: undecodable bytes escaped
    (`caf\\xe9.jpg`)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_candidate(path: str, roots: Iterable[str] | None = None) -> bool:
    return ignore_reason(path, roots) is None


def is_image_name(path: str) -> bool:
    """True when ``path`` has an image extension (case-insensitive); 'x.jpg.part' is not."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS

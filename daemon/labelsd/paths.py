"""Which paths labelsd tracks. One rule set, used by the watcher, the start-up
scan, `labels scan` and `labels show` (to explain why a path is untracked)."""

from __future__ import annotations

import os
import re
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


# What a name may hold that would break the line it is shown on: C0 controls (newline,
# carriage return, tab, ESC ...), DEL, C1 controls (U+0085 NEL ends a line for Python's
# str.splitlines, U+009B is a one-character CSI), the Unicode line and paragraph
# separators, the bidirectional overrides and isolates (which reorder what follows on
# the line), and lone surrogates (bytes that are not UTF-8, as os.fsdecode gives them).
_UNSAFE_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[{_UNSAFE_CHARS}]")
_UNSAFE_OR_BACKSLASH = re.compile(rf"[\\{_UNSAFE_CHARS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def shown(path: str | bytes | os.PathLike) -> str:
    """`path` as a log line, a message or a terminal shows it: the one owner of how a
    name is shown. Control characters are escaped (`\\n`, `\\r`, `\\t`, `\\x1b`, `\\x7f`,
    C1 and the Unicode line separators as `\\u0085`, `\\u2028`), bytes that are not
    UTF-8 as `\\xe9`, and a backslash is doubled, so a shown name is one line that names
    one file unambiguously; any other character is shown as it is. A path object or
    bytes are shown as the file system names them."""
    if type(path) is not str:
        path = os.fsdecode(path)
    if path.isprintable() and "\\" not in path:  # the usual name (every character escaped is not printable)
        return path
    return _UNSAFE_OR_BACKSLASH.sub(_escape, path)


def one_line(text: object) -> str:
    """Free text that may hold names (an error's message, a log line): its control
    characters escaped as `shown` escapes them, its backslashes left as they are, so a
    name already `shown` is not escaped twice. One line, whatever the text held."""
    text = text if type(text) is str else str(text)
    return text if text.isprintable() else _UNSAFE.sub(_escape, text)


def is_candidate(path: str, roots: Iterable[str] | None = None) -> bool:
    return ignore_reason(path, roots) is None


def is_image_name(path: str) -> bool:
    """True when ``path`` has an image extension (case-insensitive); 'x.jpg.part' is not."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def watched_roots(watch: Iterable[str]) -> list[str]:
    """The folders to watch, canonical and each once; ConfigError (saying why, in words
    that point the right way) for none, or for one that is not a folder."""
    from labelsd.errors import ConfigError

    if not watch:
        raise ConfigError("nothing to watch: pass --watch DIR, or set watch = [\"/path\"] in "
                          "the config file (~/.config/labels/config.toml or "
                          "/etc/labels/config.toml)")
    roots = []
    for folder in watch:
        root = canonical_root(folder)
        if not os.path.isdir(root):
            raise ConfigError(f"cannot watch {folder}: {_not_a_folder(root)}")
        if root not in roots:
            roots.append(root)
    return roots


def _not_a_folder(root: str) -> str:
    """Why `root` cannot be watched, in words that point the right way."""
    try:
        os.stat(root)
    except PermissionError:
        return "permission denied on the way to it (check its folders' permissions)"
    except OSError:
        return "no such folder (create it first)"
    return "not a folder (to watch what lands beside it, watch its folder)"

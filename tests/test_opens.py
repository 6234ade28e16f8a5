"""Every place the daemon and the CLI open a file (issue 31). A file opened
because of a photo (the photo, its sidecar, a thumbnail's source, anything a
watched folder can put there) must go through the one safe opener,
`fileio.open_regular` (regular files only, never blocking, no link followed, a
size cap); `fileio.atomic_output` writes what labelsd writes there. This test
walks the code of daemon/labelsd and cli/labels_cli for every call that opens
a file (`open(...)`, `os.open`, `Path.open/read_bytes/read_text/write_bytes/
write_text`, `Image.open`, `ImageFactory.open`, ...) and holds each to the list
below, with the reason it is not a way in for a hostile folder. A new call
fails here until it is listed with its reason (or goes through open_regular);
a listed call that is gone fails too, so the list stays true."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "daemon" / "labelsd", ROOT / "cli" / "labels_cli")
OPENERS = {"open", "fdopen", "read_bytes", "read_text", "write_bytes", "write_text"}

CONFIG = "a file the administrator names (config, weights, caches), never one a watched folder holds"

ALLOWED: dict[tuple[str, str, str], str] = {
    # the safe opener itself, and the atomic writer
    ("labelsd/fileio.py", "open_regular", "os.open"): "THE safe opener: O_NOFOLLOW|O_NONBLOCK, fstat",
    ("labelsd/fileio.py", "open_regular", "os.fdopen"): "wraps the descriptor open_regular checked",
    ("labelsd/fileio.py", "atomic_output", "os.open"): "O_CREAT|O_EXCL of its own new temporary file",
    ("labelsd/fileio.py", "atomic_output", "os.fdopen"): "wraps that new temporary file",
    ("labelsd/fileio.py", "atomic_output", "open"):
        "follow=True only: the file a person named with `labels export -o` (a device or FIFO "
        "written in place, as `sort -o` does); labelsd's own writes in watched folders pass "
        "follow=False",
    # files the administrator or labelsd itself names
    ("labelsd/fileio.py", "file_sha256", "open"): "weights and converted models: " + CONFIG,
    ("labelsd/config.py", "_read_toml", "path.open"): "the TOML config: " + CONFIG,
    ("labelsd/model/efficientnet.py", "check_weights", "open"): "weights: " + CONFIG,
    # the model cache, the service's alone (labelsd.owned: 0700/0600, trusted only when
    # no one else can have written it; LiteRT loads the descriptor that was checked)
    ("labelsd/owned.py", "_walk", "os.open"): "each folder on the way, O_NOFOLLOW, owner checked",
    ("labelsd/owned.py", "open_trusted", "os.open"): "a cache file, O_NOFOLLOW, owner and mode checked",
    ("labelsd/owned.py", "open_trusted", "os.fdopen"): "wraps the descriptor open_trusted checked",
    ("labelsd/model/convert.py", "_convert", "os.open"): "O_CREAT|O_EXCL 0600 of the child's output in the owned cache",
    ("labelsd/model/convert.py", "install", "os.open"): "O_NOFOLLOW 0600 record of a conversion, in the owned cache",
    ("labelsd/model/convert.py", "install", "open"): "wraps that record's descriptor",
    # the conversion's (and auto's measuring) children write into files their parent made
    # 0600 in the owned cache, and run with umask 077
    ("labelsd/model/converter.py", "convert_in_this_process", "out.write_bytes"): "the parent's 0600 file",
    ("labelsd/model/converter.py", "convert_for_litert", "out.write_bytes"): "the parent's 0600 file",
    ("labelsd/model/converter.py", "convert_for_litert", "float_file.read_bytes"):
        "the float .tflite the parent checked or the child just wrote",
    ("labelsd/model/fidelity.py", "main", "args.out.write_text"): "the parent's 0600 answer file",
    ("labelsd/model/fidelity.py", "measure_in_this_process", "path.read_bytes"):
        "the fidelity photos shipped in the package, and the .tflite files the parent gave",
    ("labelsd/model/fidelity.py", "photos_digest", "path.read_bytes"): "the fidelity photos shipped in the package",
    ("labelsd/model/automeasure.py", "_measure", "os.open"): "O_EXCL 0600 files the children write into",
    ("labelsd/model/automeasure.py", "_measure", "out.read_text"): "the child's answer, in the 0600 file made for it",
    ("labelsd/model/automeasure.py", "measured", "os.open"): "the owned cache's lock file: " + CONFIG,
    ("labelsd/model/automeasure.py", "measured", "open"): "wraps that lock file's descriptor",
    ("labelsd/model/convert.py", "opened_tflite", "os.open"): "the owned cache's lock file: " + CONFIG,
    ("labelsd/model/convert.py", "opened_tflite", "open"): "wraps that lock file's descriptor",
    ("labelsd/model/weights.py", "fetch_weights", "os.fdopen"): "the mkstemp file the download goes into (0600)",
    ("labelsd/extras.py", "installed_from", "dist.read_text"): "the installed distribution's own metadata",
    # labels similar: a file the person named on the command line (links followed: it was
    # named), O_NONBLOCK and refused unless regular, as open_regular does
    ("labelsd/serve/similar.py", "_read_image_file", "os.open"): "a path the person named, O_NONBLOCK, fstat",
    ("labelsd/serve/similar.py", "_read_image_file", "os.fdopen"): "wraps that checked descriptor",
    # the vector file beside the database (a cache of its rows, the database file's mode)
    ("labelsd/vectors/matrix.py", "open_file", "os.open"): "the vector file, O_NOFOLLOW, header checked",
    ("labelsd/vectors/matrix.py", "append", "os.open"): "the vector file, O_NOFOLLOW, same inode checked",
    ("labelsd/vectors/matrix.py", "write_file", "os.open"): "its own new file, O_EXCL|O_NOFOLLOW, renamed over",
    ("labelsd/vectors/matrix.py", "write_file", "os.fdopen"): "wraps that new file",
    # labels serve: its assets and its private thumbnail cache (0700, O_NOFOLLOW)
    ("labelsd/web/app.py", "Assets.__init__", "entry.read_bytes"): "static assets shipped in the package",
    ("labelsd/web/thumbs.py", "ThumbCache.get", "os.open"): "a cached thumbnail, O_NOFOLLOW, in the 0700 cache",
    ("labelsd/web/thumbs.py", "ThumbCache.get", "os.fdopen"): "wraps that descriptor",
    ("labelsd/web/thumbs.py", "ThumbCache.put", "os.fdopen"): "its own mkstemp file in the 0700 cache",
    ("labelsd/model/weights.py", "_digests", "open"): "weights: " + CONFIG,
    ("labelsd/model/pth.py", "_read_legacy", "open"): "weights: " + CONFIG,
    ("labelsd/model/pth.py", "_read_zip", "zf.open"): "a member of that weights zip, in memory",
    ("labelsd/model/precision.py", "_cpuinfo_value", "Path(cpuinfo).read_text"): "/proc/cpuinfo",
    ("labelsd/model/taxonomy.py", "_data",
     "resources.files(DATA_PACKAGE).joinpath(DATA_FILE).read_text"): "data shipped in the package",
    ("labelsd/model/device.py", "native_stderr_quiet", "os.open"): "os.devnull",
    ("labels_cli/app.py", "_quiet_pipe", "os.open"): "os.devnull",
    ("labelsd/store/access.py", "prepare_database_file", "os.open"):
        "O_CREAT|O_EXCL of the new SQLite file: " + CONFIG,
    ("labelsd/store/dbfile.py", "ServedFile.claim", "os.open"): "the database's lock file: " + CONFIG,
    # bytes already in memory (read by open_regular), never a path
    ("labelsd/model/decode.py", "decode_image", "Image.open"): "BytesIO of the bytes the reader read",
    ("labelsd/serve/thumbnails.py", "thumbnail_of", "Image.open"):
        "the handle open_regular returned, or bytes labels serve checked against their hash",
    ("labelsd/xmp/exiv.py", "read_xmp", "load().ImageFactory.open"):
        "an XMP packet's bytes (embedded, or a sidecar read by open_regular), never a path",
}


def opening_calls() -> set[tuple[str, str, str]]:
    """(module path under its package's parent, enclosing function, callee) of every call
    whose callee is named like an opener."""
    found = set()
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            found |= calls_in(path.read_text(encoding="utf-8"), str(path.relative_to(package.parent)))
    return found


def calls_in(source: str, where: str) -> set[tuple[str, str, str]]:
    """(where, enclosing function, callee) of the opener calls in one module's source."""
    found = set()

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call):
                f = child.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if name in OPENERS:
                    found.add((where, ".".join(scope) or "<module>", ast.unparse(f)))
            visit(child, scope)

    visit(ast.parse(source), [])
    return found


def test_every_file_opened_goes_through_the_safe_opener_or_is_listed_with_its_reason():
    found = opening_calls()
    unlisted = sorted(found - ALLOWED.keys())
    assert not unlisted, ("files opened outside fileio.open_regular; open them through it, or "
                          f"list them in ALLOWED with the reason they are safe: {unlisted}")
    gone = sorted(ALLOWED.keys() - found)
    assert not gone, f"listed calls that no longer exist (take them off the list): {gone}"


def test_the_walk_sees_what_it_must():
    """The walk itself: a stray open() of a sidecar would be caught, named by its
    method and class, and so would a path method and an os-level open."""
    assert ("labelsd/fileio.py", "open_regular", "os.open") in opening_calls()
    source = ("class Reader:\n"
              "    def read_sidecar(self, p):\n"
              "        with open(p + '.xmp', 'rb') as fh:\n"
              "            return fh.read(), Path(p).read_bytes(), os.fdopen(os.open(p, 0))\n"
              "data = open('x').read()\n")
    assert calls_in(source, "m.py") == {
        ("m.py", "Reader.read_sidecar", "open"), ("m.py", "Reader.read_sidecar", "Path(p).read_bytes"),
        ("m.py", "Reader.read_sidecar", "os.fdopen"), ("m.py", "Reader.read_sidecar", "os.open"),
        ("m.py", "<module>", "open")}

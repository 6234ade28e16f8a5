"""Checksums of the model files are computed once and remembered while the file is
unchanged (labelsd.model.digests), so a service start does not hash them again."""

from __future__ import annotations

import json
import os

import pytest

from labelsd.fileio import file_sha256
from labelsd.model import convert, digests
from labelsd.model import weights as weights_mod


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _counting(calls: list):
    def compute(path):
        calls.append(path)
        return {"size": path.stat().st_size, "head": path.read_bytes()[:4].hex()}
    return compute


def test_computed_once_while_the_file_is_unchanged(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abcd" * 100)
    calls: list = []
    first = digests.remembered(f, "facts", _counting(calls))
    assert digests.remembered(f, "facts", _counting(calls)) == first == {"size": 400, "head": "61626364"}
    assert len(calls) == 1 and digests.cache_file().is_file()
    assert digests.remembered(f, "other facts", _counting(calls)) == first and len(calls) == 2  # per kind


def test_a_write_is_noticed_even_with_size_and_mtime_put_back(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abcd" * 100)
    before = f.stat()
    calls: list = []
    digests.remembered(f, "facts", _counting(calls))
    f.write_bytes(b"wxyz" * 100)  # same size
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: the ctime moved on
    assert digests.remembered(f, "facts", _counting(calls))["head"] == "7778797a" and len(calls) == 2
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"qrst" * 100)
    os.replace(replacement, f)  # another file under the same name
    assert digests.remembered(f, "facts", _counting(calls))["head"] == "71727374" and len(calls) == 3


def test_an_unwritable_or_damaged_cache_only_costs_the_hashing(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abcd")
    calls: list = []
    digests.cache_file().parent.mkdir(parents=True)
    digests.cache_file().write_text("{not json")
    assert digests.remembered(f, "facts", _counting(calls))["size"] == 4  # and repaired
    assert digests.remembered(f, "facts", _counting(calls))["size"] == 4 and len(calls) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-cache")
    for _ in range(2):
        assert digests.remembered(f, "facts", _counting(calls))["size"] == 4
    assert len(calls) == 3
    with pytest.raises(FileNotFoundError):  # a missing file is compute's to report
        digests.remembered(tmp_path / "absent", "facts", lambda p: {"size": p.stat().st_size})


def test_the_weights_are_hashed_once_across_starts(weights_files, monkeypatch):
    real = weights_mod._digests
    calls = []
    monkeypatch.setattr(weights_mod, "_digests", lambda path: calls.append(path) or real(path))
    first = weights_mod.resolve_weights(str(weights_files.keras3))
    assert weights_mod.resolve_weights(str(weights_files.keras3)) == first and len(calls) == 1
    assert first[1:] == ("keras3", f"InceptionV3/{file_sha256(weights_files.keras3)[:12]}")


def test_a_cached_tflite_is_hashed_once_while_unchanged(tmp_path, monkeypatch):
    sha = "ab" * 32
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"w")
    tflite, meta = convert.cache_paths(weights, sha, "inception_v3", "int8")
    tflite.write_bytes(b"TFL3" + bytes(1000))
    meta.write_text(json.dumps({**convert._record(sha, "inception_v3", "int8"),
                                              "tflite_size": 1004, "tflite_sha256": file_sha256(tflite)}))
    calls = []
    monkeypatch.setattr(convert, "file_sha256", lambda path: calls.append(path) or file_sha256(path))
    assert convert.cached_tflite(weights, sha, "inception_v3", "int8") == tflite
    assert convert.cached_tflite(weights, sha, "inception_v3", "int8") == tflite and len(calls) == 1
    tflite.write_bytes(b"TFL3" + bytes(999) + b"x")  # damaged: hashed again, and refused
    assert convert.cached_tflite(weights, sha, "inception_v3", "int8") is None and len(calls) == 2

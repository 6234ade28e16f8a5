"""The LiteRT runtime: conversion in a child process, its cache (hit, corrupt, stale), the
answers against Keras, a process without TensorFlow, the fall-backs, and the service on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (a dependency of labelsd)")

from labelsd.errors import ConversionFailed  # noqa: E402
from labelsd.model import convert, runtime  # noqa: E402
from labelsd.model.classifier import Classifier  # noqa: E402
from labelsd.model.litert import LiteRTRuntime  # noqa: E402
from labelsd.model.registry import get_model  # noqa: E402
from labelsd.model.runtime import precision_word, runtime_kind  # noqa: E402

BIASED_CLASS = 281  # tests/conftest.py biases `biased_weights_file` towards tabby


@pytest.fixture(scope="module")
def library(tmp_path_factory, weights_files):
    """A weights file of its own (the conversions are cached next to it), converted to
    fp32 and int8 once for the module: {precision: tflite path}."""
    folder = tmp_path_factory.mktemp("litert")
    weights = folder / "inception_v3.weights.h5"
    shutil.copy(weights_files.keras3, weights)
    spec = get_model("inception_v3")
    path, sha, _name = spec.identify(weights, spec.check_weights(weights))
    converted = {p: convert.ensure_tflite(path, sha, "inception_v3", p) for p in ("fp32", "int8")}
    return path, "keras3", sha, converted


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(11).uniform(-1, 1, (5, 299, 299, 3)).astype(np.float32)


def _litert(tflite, precision="fp32", batch_size=4):
    runtime = LiteRTRuntime(tflite, precision={"fp32": "float32"}.get(precision, precision))
    return Classifier(get_model("inception_v3"), runtime, name="t", weights_path="w", batch_size=batch_size)


def test_converted_next_to_the_weights_with_its_record(library):
    path, _layout, sha, converted = library
    for precision, tflite in converted.items():
        assert tflite.parent == path.parent and sha[:16] in tflite.name and precision in tflite.name
        record = json.loads(tflite.with_name(tflite.name + ".json").read_text())
        assert record["weights_checksum"] == sha and record["precision"] == precision
        assert record["tflite_size"] == tflite.stat().st_size
    # dynamic range keeps int8 weights: about a quarter of the fp32 file
    assert converted["int8"].stat().st_size < 0.35 * converted["fp32"].stat().st_size


def test_fp32_answers_as_keras_does(library, weights_files, images):
    import keras

    reference = keras.applications.InceptionV3(weights=None, classifier_activation="softmax")
    reference.load_weights(str(weights_files.keras3))
    ours = _litert(library[3]["fp32"]).predict(images)  # 5 images at batch 4: a full and a partial batch
    assert ours.shape == (5, 1000) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference.predict(images, verbose=0), atol=1e-5)


def test_batch_sizes_change_without_padding_or_drift(library, images):
    clf = _litert(library[3]["int8"], "int8")
    one_by_one = np.concatenate([clf.predict(images[i:i + 1]) for i in range(len(images))])
    np.testing.assert_allclose(clf.predict(images), one_by_one, atol=1e-6)
    assert clf.padded_size(3) == 3 and clf.warm_up() > 0
    with pytest.raises(ValueError, match="expected images of shape"):
        clf.predict(np.zeros((2, 224, 224, 3), np.float32))


def test_cache_folder_next_to_the_weights_unless_read_only_or_a_package(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    user_cache = tmp_path / "cache" / "labels" / "tflite"
    weights = tmp_path / "w.h5"
    assert convert.cache_folder(weights) == tmp_path
    (tmp_path / "ro").mkdir(mode=0o555)
    monkeypatch.setattr(convert.os, "access", lambda path, mode: str(path) != str(tmp_path / "ro"))
    assert convert.cache_folder(tmp_path / "ro" / "w.h5") == user_cache
    inside = Path(sys.prefix) / "lib" / "w.pth"  # e.g. a weights package's own file
    assert convert.cache_folder(inside) == user_cache


def test_a_cached_file_is_used_without_converting(library, monkeypatch):
    path, layout, sha, converted = library

    def no_child(*args, **kwargs):
        raise AssertionError("converted again although the cache was good")

    monkeypatch.setattr(convert.subprocess, "run", no_child)
    assert convert.ensure_tflite(path, sha, "inception_v3", "int8") == converted["int8"]


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "no record", "other weights",
                                    "older format", "record not json"])
def test_a_damaged_or_stale_cache_file_is_not_used(library, tmp_path, damage):
    path, _layout, sha, converted = library
    weights = tmp_path / path.name
    weights.symlink_to(path)  # the same weights, a cache folder of its own to damage
    tflite, meta = convert.cache_paths(weights, sha, "inception_v3", "int8")
    shutil.copy(converted["int8"], tflite)
    shutil.copy(converted["int8"].with_name(converted["int8"].name + ".json"), meta)
    assert convert.cached_tflite(weights, sha, "inception_v3", "int8") == tflite  # intact: used
    data, record = tflite.read_bytes(), json.loads(meta.read_text())
    if damage == "truncated":
        tflite.write_bytes(data[: len(data) // 2])
    elif damage == "flipped byte":
        tflite.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    elif damage == "no record":
        meta.unlink()
    elif damage == "other weights":
        meta.write_text(json.dumps({**record, "weights_checksum": "0" * 64}))
    elif damage == "older format":
        meta.write_text(json.dumps({**record, "format": convert.CONVERSION_FORMAT - 1}))
    else:
        meta.write_text("{")
    assert convert.cached_tflite(weights, sha, "inception_v3", "int8") is None


def test_a_corrupt_cache_file_is_converted_again_and_serves(library, tmp_path, images):
    path, layout, sha, converted = library
    weights = tmp_path / path.name
    shutil.copy(path, weights)
    tflite, meta = convert.cache_paths(weights, sha, "inception_v3", "int8")
    shutil.copy(converted["int8"].with_name(converted["int8"].name + ".json"), meta)
    tflite.write_bytes(converted["int8"].read_bytes()[:1000])  # a crash mid-copy
    assert convert.ensure_tflite(weights, sha, "inception_v3", "int8") == tflite
    assert tflite.read_bytes() == converted["int8"].read_bytes()  # the conversion is deterministic
    np.testing.assert_allclose(_litert(tflite, "int8").predict(images[:2]),
                               _litert(converted["int8"], "int8").predict(images[:2]), atol=1e-6)


def test_changed_weights_are_converted_again_and_the_old_file_removed(library, tmp_path, weights_files,
                                                                      caplog):
    path, *_ = library
    weights = tmp_path / path.name
    shutil.copy(path, weights)
    old = runtime.load_model(weights, "cpu", 2, "int8", warm=False)
    old_file = old.runtime.tflite_path
    shutil.copy(weights_files.biased_h5, weights)  # saved over, same name (legacy layout now)
    with caplog.at_level("INFO"):
        new = runtime.load_model(weights, "cpu", 2, "int8", warm=False)
    assert (runtime_kind(new), precision_word(new)) == ("litert", "int8")
    assert new.runtime.tflite_path != old_file
    assert "removing" in caplog.text and not Path(old_file).exists()
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == [Path(new.runtime.tflite_path).name]
    top = new.top3(np.zeros((1, 299, 299, 3), np.float32))[0][0]
    assert top.class_index == BIASED_CLASS and top.label == "tabby"


def test_a_process_on_litert_never_imports_tensorflow(library):
    path, _layout, _sha, _converted = library
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec from the (forking) parent
    code = ("import re, sys, numpy as np\n"
            "from labelsd.model.runtime import load_model, describe\n"
            f"c = load_model({str(path)!r}, 'cpu', 4, 'fp32')\n"
            "c.top3(np.zeros((3, 299, 299, 3), np.float32))\n"
            "print(describe(c), sorted(m for m in ('tensorflow', 'keras') if m in sys.modules),\n"
            "      int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("cpu, litert fp32 [] "), out.stdout
    assert int(out.stdout.split()[-1]) < 400  # MiB at peak (TensorFlow alone takes ~600)


def test_tensorflow_runs_it_where_litert_is_not_installed(library, monkeypatch, caplog):
    path, *_ = library
    monkeypatch.setattr(runtime, "litert_available", lambda: False)
    with caplog.at_level("INFO"):
        clf = runtime.load_model(path, "cpu", 2, "int8", warm=False)
    assert (runtime_kind(clf), precision_word(clf)) == ("tensorflow", "fp32")
    assert caplog.text.count("LiteRT is not installed") == 1
    assert "int8 runs on LiteRT only" in caplog.text
    assert runtime.plan("cpu", "int8")["runtime"] == "tensorflow"


def test_tensorflow_runs_it_where_the_conversion_fails(library, tmp_path, monkeypatch, caplog):
    path, *_ = library
    weights = tmp_path / path.name
    shutil.copy(path, weights)  # nothing cached next to this one
    monkeypatch.setattr(convert, "CONVERT_TIMEOUT_S", 0.5)  # the real child, killed
    with caplog.at_level("INFO"):
        clf = runtime.load_model(weights, "cpu", 2, "fp32", warm=False)
    assert (runtime_kind(clf), precision_word(clf)) == ("tensorflow", "fp32")
    assert "took over 0.5 s: TensorFlow runs the model" in caplog.text
    assert list(tmp_path.glob("*.tflite")) == [] and list(tmp_path.glob(".*.tmp")) == []


def test_a_child_that_fails_says_why():
    with pytest.raises(ConversionFailed, match="no LiteRT conversion for precision 'bf16'"):
        convert.ensure_tflite(None, "0" * 64, "inception_v3", "bf16")
    out = subprocess.run([sys.executable, "-m", "labelsd.model.converter", "--weights", "/nonexistent.h5",
                          "--precision", "int8", "--out", "/tmp/never.tflite"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "nonexistent" in out.stderr.strip().splitlines()[-1]


def test_the_service_on_litert_int8_says_so(library, tmp_path):
    from typer.testing import CliRunner

    from imagegen import make_image
    from labels_cli.app import app
    from servicekit import Service

    path, *_ = library
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = tmp_path / "labels.db"
    svc = Service(tmp_path, db=db, weights=path, watch=[inbox], args=["--device", "cpu", "--precision", "int8"])
    try:
        svc.start().wait_ready()
        photo = make_image(inbox / "cat.jpg", size=(320, 240), seed=5)
        assert svc.wait_settled([photo], 120, want=("done",))[str(photo)] == "done"
        result = CliRunner().invoke(app, ["--db", str(db), "status", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["device"] == "cpu, litert int8"
        text = CliRunner().invoke(app, ["--db", str(db), "status"]).stdout
        assert "cpu, litert int8" in text
        assert "runtime litert, precision int8" in svc.log()
    finally:
        svc.stop()


def test_model_info_says_runtime_and_precision(library):
    from typer.testing import CliRunner

    from labels_cli.app import app

    path, *_ = library
    result = CliRunner().invoke(app, ["model", "info", "--weights", str(path), "--device", "cpu",
                                      "--precision", "int8", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert (facts["runtime"], facts["precision"], facts["why"]) == ("litert", "int8", "asked for")
    text = CliRunner().invoke(app, ["model", "info", "--weights", str(path), "--device", "cpu",
                                    "--precision", "fp32"]).stdout
    assert "runtime:   litert" in text and "precision: fp32" in text


def test_auto_on_random_weights_cannot_judge_fidelity_and_runs_the_fastest(library, caplog, monkeypatch):
    """Random weights put every photo of the fidelity set in one class: agreement then says
    nothing, which `auto` says (WARNING) before running the fastest; `labels model info` shows
    the kept measurement. (bf16 is left out here: no bf16 flags, so no TensorFlow model is built.)"""
    from typer.testing import CliRunner

    from labels_cli.app import app
    from labelsd.model import automeasure
    from labelsd.model import precision as prec

    path, *_ = library
    spec = get_model("inception_v3")
    m = automeasure.measured(spec, path, spec.check_weights(path), 8, frozenset({"avx2"}))
    assert m is not None and set(m.precisions) == {"fp32", "int8"}
    assert not m.judged and m.one_class >= 0.9 * m.photos
    with caplog.at_level("WARNING"):
        choice = prec.choose_cpu_precision("auto", frozenset({"avx2"}), lambda: m)
    fastest = max(m.precisions, key=lambda p: m.precisions[p].forward_ips)
    assert choice.precision == fastest or m.precisions[fastest].forward_ips < 1.05 * m.precisions["int8"].forward_ips
    assert "fidelity cannot be judged" in caplog.text
    assert f"measured in {m.seconds:.1f} s" in choice.reason
    # what `labels model info` says: the kept measurement, read without measuring (the CPU's
    # flags are part of its key: this one's are taken to be those it was measured under)
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2"}))
    result = CliRunner().invoke(app, ["model", "info", "--weights", str(path), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["auto"]["chosen"] == facts["precision"] == choice.precision and facts["auto"]["judged"] is False
    assert set(facts["auto"]["measured"]) == {"fp32", "int8"} and facts["auto"]["photos"] == m.photos
    assert facts["why"].startswith(f"auto: {facts['precision']}, the fastest; fidelity cannot be judged")


def test_labels_scan_runs_on_litert_without_tensorflow(library, tmp_path):
    """`labels scan` loads the model as the service does: LiteRT where it serves, the
    precision setting honoured, and TensorFlow never imported in its process."""
    from imagegen import make_image

    path, *_ = library
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_image(photos / f"p{i}.jpg", size=(320, 240), seed=i)
    code = ("import sys\n"
            "from labels_cli.app import app\n"
            "try:\n"
            "    app(sys.argv[1:], prog_name='labels')\n"
            "except SystemExit as end:\n"
            "    print('exit', end.code)\n"
            "print('tensorflow imported:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code, "--db", str(tmp_path / "labels.db"), "scan", str(photos),
                          "--weights", str(path), "--device", "cpu", "--precision", "int8", "--batch-size", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 labeled" in out.stdout and "exit 0" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "tensorflow imported: []" in out.stdout, out.stdout
    assert "on cpu, litert int8" in out.stderr, out.stderr[-2000:]


def test_a_full_batch_does_not_grow_the_fp32_interpreter_for_good(library):
    """XNNPACK keeps the activations of the largest batch it ran until the end: at
    batch 8, InceptionV3 fp32 held 70 MiB more at rest than at batch 1. The runtime
    runs a batch in slices of `max_rows` (same answers, same speed on the CPU)."""
    tflite = library[3]["fp32"]
    code = ("import re, numpy as np\n"
            "from labelsd.model.litert import LiteRTRuntime\n"
            "rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024\n"
            f"r = LiteRTRuntime({str(tflite)!r}, precision='float32')\n"
            "x = np.random.RandomState(0).uniform(-1, 1, (8, 299, 299, 3)).astype(np.float32)\n"
            "one = r.forward(x[:1]).probabilities; before = rss()\n"
            "eight = r.forward(x).probabilities\n"
            "assert eight.shape == (8, 1000) and np.allclose(eight[:1], one, atol=1e-5)\n"
            "print(rss() - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) < 35, out.stdout  # MiB more after the batch of 8


def test_litert_runs_on_the_cores_this_process_may_use_unless_told(library):
    path, *_ = library
    cores = len(os.sched_getaffinity(0))
    assert runtime.load_model(path, "cpu", 2, "int8", warm=False).runtime.threads == cores
    assert runtime.load_model(path, "cpu", 2, "int8", warm=False, threads=3).runtime.threads == 3


def test_warm_up_runs_the_largest_slice_so_a_first_burst_pays_no_growth(library):
    """XNNPACK sizes its working memory for the largest batch it has run, and the first
    batch of each new largest size pays for that (int8 InceptionV3: 12-14 ms an image
    at the first 4, 6 and 8 against 9 after; +59 MiB at the first 8). Warm-up runs the
    largest slice the runtime will ever run, so the first burst after READY runs as
    the next ones do, and at rest the process holds what it would after any burst."""
    import re

    def rss() -> int:
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())[1]) // 1024

    path, *_ = library
    clf = runtime.load_model(path, "cpu", 8, "int8")
    assert clf.warm_sizes == (1, 8)
    fp32 = runtime.load_model(path, "cpu", 8, "fp32")
    assert fp32.warm_sizes == (1, 2)  # fp32 runs batches in slices of 2
    assert runtime.load_model(path, "cpu", 1, "int8").warm_sizes == (1,)
    batch = np.random.RandomState(0).uniform(-1, 1, (8, 299, 299, 3)).astype(np.float32)
    before = rss()
    clf.predict(batch)
    assert rss() - before < 20, "the first full batch grew the interpreter"  # +59 MiB before

"""`precision = auto`'s measurement: made once by a child (which converts the model too), kept
beside the converted files, read back at every later start, and made again when what it was
measured under changes (weights, model, recipe, runtime version, conversion format, CPU)."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest

from labelsd.model import automeasure, convert, quantize
from labelsd.model.precision import Measured, Measurement

AVX512 = frozenset({"avx2", "avx512_bf16"})
TABLE = Measurement(25, 2, {"fp32": Measured("litert", 39.0, 25, 3, 25), "int8": Measured("litert", 119.3, 25, 2, 23),
                            "bf16": Measured("tensorflow", 48.8, 25, 3, 24)}, 6.5)


class FakeChild:
    """Stands in for subprocess.run of `python -m labelsd.model.fidelity`: writes the files it
    is asked to make and the measurement; records each command."""

    def __init__(self, table: Measurement | None = TABLE):
        self.calls: list[list[str]] = []
        self.table = table

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        args = dict(zip(cmd[3::2], cmd[4::2]))  # after python -m labelsd.model.fidelity
        if self.table is None:
            return subprocess.CompletedProcess(cmd, 1, "", "RuntimeError: no luck\n")
        for i, arg in enumerate(cmd):
            if arg == "--make":
                precision, path = cmd[i + 1].split("=", 1)
                with open(path, "wb") as f:
                    f.write(f"a {precision} model".encode())
        with open(args["--out"], "w") as f:
            json.dump({"measurement": self.table.to_json(), "convert_s": 12.0}, f)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def option(self, call: int, name: str) -> list[str]:
        cmd = self.calls[call]
        return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == name]


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "models" / "my.weights.h5"
    path.parent.mkdir()
    path.write_bytes(b"weights")
    return path


def _spec(path, checksum="a" * 64, key="inception_v3"):
    return SimpleNamespace(key=key, identify=lambda weights, checked: (path, checksum, "InceptionV3/aaaa"),
                           check_weights=lambda weights: ("checked",))


@pytest.fixture
def child(monkeypatch):
    fake = FakeChild()
    monkeypatch.setattr(automeasure.subprocess, "run", fake)
    monkeypatch.setattr(automeasure, "litert_available", lambda: True)
    return fake


def test_measured_once_by_the_child_that_converts_and_read_back_after(weights, child):
    spec = _spec(weights)
    assert automeasure.known(spec, weights, ("checked",), 8, AVX512) is None  # never measures
    assert child.calls == []
    first = automeasure.measured(spec, weights, ("checked",), 8, AVX512)
    assert first == TABLE and len(child.calls) == 1
    cmd = child.calls[0]
    assert cmd[1:3] == ["-m", "labelsd.model.fidelity"] and "--bf16" in cmd
    assert [m.split("=")[0] for m in child.option(0, "--make")] == ["fp32", "int8"]  # converted there
    # the converted files are installed with their records, beside the weights
    for precision in ("fp32", "int8"):
        assert convert.cached_tflite(weights, "a" * 64, "inception_v3", precision) is not None
    record = automeasure.record_path(weights, "a" * 64, "inception_v3")
    assert record.parent == weights.parent and record.name == f"my.weights.h5.inception_v3.auto.{'a' * 16}.json"
    assert sorted(p.name for p in weights.parent.iterdir() if p.name.startswith(".") and "tmp" in p.name) == []
    # a later start: one small file read, no child
    assert automeasure.measured(spec, weights, ("checked",), 8, AVX512) == TABLE
    assert automeasure.known(spec, weights, ("checked",), 8, AVX512) == TABLE
    assert len(child.calls) == 1


def test_files_converted_earlier_are_measured_not_converted_again(weights, child):
    spec = _spec(weights)
    tmp = weights.parent / ".fp32.tmp"
    tmp.write_bytes(b"fp32 made by an earlier --precision fp32")
    made = convert.install(tmp, weights, "a" * 64, "inception_v3", "fp32")
    automeasure.measured(spec, weights, ("checked",), 8, frozenset({"avx2"}))
    assert child.option(0, "--use") == [f"fp32={made}"]
    assert [m.split("=")[0] for m in child.option(0, "--make")] == ["int8"]
    assert "--bf16" not in child.calls[0]  # no bf16 hardware: not a candidate


@pytest.mark.parametrize("change", ["weights", "model", "int8 recipe", "bf16 recipe", "conversion format",
                                    "litert version", "tensorflow version", "cpu", "batch size", "photos"])
def test_measured_again_when_what_it_was_measured_under_changes(weights, child, monkeypatch, change):
    spec, flags, batch = _spec(weights), AVX512, 8
    automeasure.measured(spec, weights, ("checked",), batch, flags)
    if change == "weights":
        spec = _spec(weights, checksum="b" * 64)
    elif change == "model":
        spec = _spec(weights, key="efficientnet_lite0")
    elif change == "int8 recipe":
        monkeypatch.setitem(convert.RECIPES, "int8", quantize.RECIPE + ", and something new")
    elif change == "bf16 recipe":
        monkeypatch.setattr("labelsd.model.keras_runtime.BF16_RECIPE", "every layer in bfloat16")
    elif change == "conversion format":
        monkeypatch.setattr(convert, "CONVERSION_FORMAT", convert.CONVERSION_FORMAT + 1)
    elif change in ("litert version", "tensorflow version"):
        kind = change.split()[0]
        real = automeasure._version
        monkeypatch.setattr(automeasure, "_version", lambda names: "99.0" if names ==
                            automeasure.RUNTIME_PACKAGES[kind] else real(names))
    elif change == "cpu":
        flags = AVX512 | {"amx_bf16", "amx_int8"}
    elif change == "batch size":
        batch = 4
    elif change == "photos":
        monkeypatch.setattr("labelsd.model.fidelity.photos_digest", lambda: "another set")
    assert automeasure.known(spec, weights, ("checked",), batch, flags) is None
    assert automeasure.measured(spec, weights, ("checked",), batch, flags) == TABLE
    assert len(child.calls) == 2


def test_a_failed_measurement_is_not_kept_and_leaves_nothing_behind(weights, monkeypatch, caplog):
    failing = FakeChild(table=None)
    monkeypatch.setattr(automeasure.subprocess, "run", failing)
    monkeypatch.setattr(automeasure, "litert_available", lambda: True)
    with caplog.at_level("WARNING"):
        assert automeasure.measured(_spec(weights), weights, ("checked",), 8, AVX512) is None
    assert "could not measure the precisions (RuntimeError: no luck): fp32 it is" in caplog.text
    assert sorted(p.name for p in weights.parent.iterdir() if not p.name.endswith(".lock")) == ["my.weights.h5"]
    working = FakeChild()
    monkeypatch.setattr(automeasure.subprocess, "run", working)
    assert automeasure.measured(_spec(weights), weights, ("checked",), 8, AVX512) == TABLE  # tried again


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"key": 1}', ""])
def test_a_damaged_record_is_measured_again(weights, child, content):
    spec = _spec(weights)
    automeasure.measured(spec, weights, ("checked",), 8, AVX512)
    automeasure.record_path(weights, "a" * 64, "inception_v3").write_text(content)
    assert automeasure.measured(spec, weights, ("checked",), 8, AVX512) == TABLE
    assert len(child.calls) == 2


def test_a_folder_that_cannot_be_written_means_fp32(weights, monkeypatch, caplog):
    monkeypatch.setattr(automeasure.convert, "cache_folder", lambda path: weights / "not a folder")
    with caplog.at_level("WARNING"):
        assert automeasure.measured(_spec(weights), weights, ("checked",), 8, AVX512) is None
    assert "cannot keep the precision measurement" in caplog.text


def test_the_fidelity_set_is_shipped_small_square_and_each_photo_has_its_source_and_licence():
    from PIL import Image

    from labelsd.model import fidelity

    photos = fidelity.photo_paths()
    assert 20 <= len(photos) <= 30
    assert sum(p.stat().st_size for p in photos) < 600_000  # a few hundred kB
    sources = (fidelity.PHOTOS_FOLDER / "SOURCES.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in sources.splitlines() if line.startswith("| ")}
    for path in photos:
        with Image.open(path) as img:
            assert (img.format, img.size) == ("JPEG", (299, 299)), path.name
        row = rows.get(path.name, "")
        assert row.count(" | ") == 2 and all(cell.strip() for cell in row.strip("| ").split(" | ")), path.name
        assert any(word in row for word in ("CC0", "public domain", "CC BY 2.0")), row
    assert len(fidelity.photos_digest()) == 16


def test_a_few_keys_are_kept_side_by_side_so_two_users_of_one_folder_do_not_measure_by_turns(weights, child):
    spec = _spec(weights)
    for batch in (8, 4, 8, 4, 2, 1, 16):  # a scan at 4 beside a service at 8, then others
        automeasure.measured(spec, weights, ("checked",), batch, AVX512)
    assert len(child.calls) == 5  # 8, 4, 2, 1, 16: each measured once
    record = json.loads(automeasure.record_path(weights, "a" * 64, "inception_v3").read_text())
    assert [e["key"]["batch_size"] for e in record["measurements"]] == [16, 1, 2, 4]  # the newest KEPT
    automeasure.measured(spec, weights, ("checked",), 8, AVX512)
    assert len(child.calls) == 6  # the oldest went


def test_services_started_together_measure_once(weights, monkeypatch):
    """Two starts at once (two nodes on one machine): one child; the other waits on the lock,
    then reads what it kept."""
    import threading

    started, release = threading.Event(), threading.Event()
    fake = FakeChild()

    def slow_child(cmd, **kwargs):
        started.set()
        assert release.wait(30)
        return fake(cmd, **kwargs)

    locking, real_flock = [], automeasure.fcntl.flock
    second_waits = threading.Event()

    def flock(fd, op):
        locking.append(op)
        if len(locking) == 2:
            second_waits.set()  # the second start is about to wait on the first's lock
        return real_flock(fd, op)

    monkeypatch.setattr(automeasure.subprocess, "run", slow_child)
    monkeypatch.setattr(automeasure, "litert_available", lambda: True)
    monkeypatch.setattr(automeasure.fcntl, "flock", flock)
    got = []
    threads = [threading.Thread(target=lambda: got.append(
        automeasure.measured(_spec(weights), weights, ("checked",), 8, AVX512))) for _ in range(2)]
    threads[0].start()
    assert started.wait(30)
    threads[1].start()
    assert second_waits.wait(30), "the second start did not wait on the lock"
    release.set()
    for t in threads:
        t.join(30)
    assert got == [TABLE, TABLE] and len(fake.calls) == 1


@pytest.mark.parametrize("how, said", [
    ("exit 0, no answer", "its answer:"),
    ("exit 0, not a measurement", "its answer: not a measurement"),
    ("timed out", f"it took over {convert.CONVERT_TIMEOUT_S} s"),
    ("killed", "exit -9"),
])
def test_a_child_that_gives_no_measurement_means_fp32_and_says_why(weights, monkeypatch, caplog, how, said):
    def child(cmd, **kwargs):
        out = cmd[cmd.index("--out") + 1]
        if how == "timed out":
            raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])
        if how == "exit 0, not a measurement":
            with open(out, "w") as f:
                json.dump({"measurement": {"photos": 25}}, f)
        return subprocess.CompletedProcess(cmd, -9 if how == "killed" else 0, "", "")

    monkeypatch.setattr(automeasure.subprocess, "run", child)
    monkeypatch.setattr(automeasure, "litert_available", lambda: True)
    with caplog.at_level("WARNING"):
        assert automeasure.measured(_spec(weights), weights, ("checked",), 8, AVX512) is None
    assert f"could not measure the precisions ({said}" in caplog.text
    assert sorted(p.name for p in weights.parent.iterdir() if not p.name.endswith(".lock")) == ["my.weights.h5"]


def test_a_measurement_that_cannot_be_kept_still_serves_this_start(weights, child, monkeypatch, caplog):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(automeasure.owned, "write_json", full)
    with caplog.at_level("WARNING"):
        assert automeasure.measured(_spec(weights), weights, ("checked",), 8, AVX512) == TABLE
    assert "No space left on device): the next start measures again" in caplog.text
    assert not automeasure.record_path(weights, "a" * 64, "inception_v3").exists()


@pytest.mark.parametrize("photos, full_batches", [(25, 3), (9, 1)])
def test_speeds_come_from_the_labelling_pass_each_precision_warmed_and_interleaved(photos, full_batches):
    """The pass that gives each precision's labels times it too: its first batch (warm-up,
    a trace) is never timed, the precisions take turns going first, and where the set has
    fewer than fidelity.TIMED full batches after the first, the first batch runs again
    until it has them (and only then)."""
    import time

    import numpy as np

    from labelsd.model import fidelity

    calls: list[tuple[str, int]] = []

    def runner(name: str, warm_s: float, batch_s: float):
        def run(batch):
            first = not any(p == name for p, _ in calls)
            calls.append((name, len(batch)))
            time.sleep(warm_s if first else batch_s)
            probs = np.zeros((len(batch), 1000), np.float32)
            probs[:, 7] = 1
            return probs
        return run

    pixels = np.zeros((photos, 2, 2, 3), np.float32)
    m = fidelity.measure({"fp32": runner("fp32", 0.3, 0.04), "int8": runner("int8", 0.3, 0.01)},
                         pixels, 8, {"fp32": "litert", "int8": "litert"})
    assert m.precisions["fp32"].top1 == photos and m.one_class == photos
    # 8 photos in 0.04 s (0.01): 200 (800) img/s; the warm-up's 0.3 s would give 27
    assert 50 < m.precisions["fp32"].forward_ips <= 200 < m.precisions["int8"].forward_ips <= 800
    extra = max(0, fidelity.TIMED - (full_batches - 1))
    assert len(calls) == 2 * (-(-photos // 8) + extra)
    firsts = [calls[i][0] for i in range(0, len(calls), 2)]
    assert firsts[:2] == ["int8", "fp32"]  # each goes first every other batch

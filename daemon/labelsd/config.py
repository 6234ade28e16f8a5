"""Settings, one loader for `labels` and `labelsd`.

Highest first: command-line flags, environment (LABELS_DB, LABELS_WEIGHTS,
LABELS_CONFIG), a TOML file ($LABELS_CONFIG, else ~/.config/labels/config.toml,
else /etc/labels/config.toml), defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs
import tomllib

from labelsd.errors import ConfigError
from labelsd.model.registry import DEFAULT_MODEL, check_model_name

APP = "labels"
SYSTEM_CONFIG = Path("/etc/labels/config.toml")

ENV_VARS = {"db": "LABELS_DB", "weights": "LABELS_WEIGHTS", "serve_token": "LABELS_SERVE_TOKEN"}
DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "fp32", "bf16", "int8")  # labelsd.model.precision says what each means
LOG_LEVELS = ("debug", "info", "warning", "error")
XMP_MODES = ("off", "sidecar")  # sidecar: NAME.EXT.xmp beside each labelled photo
# The score a label match needs to be shown by a search unless --min-score says
# otherwise: below it the model's labels are mostly noise (bench/scorefloor.py).
DEFAULT_SEARCH_MIN_SCORE = 0.1


def parse_score(text: str | float) -> float:
    """A score as people write it: a fraction from 0 to 1 (`0.5`) or a percentage
    (`50%`), the way scores are printed. A bare number over 1 (`50`) is refused,
    not read as a percentage: `1` would be ambiguous (100% or 1%?). ValueError
    says what to write instead."""
    shown = str(text).strip()
    percent = shown.endswith("%")
    try:
        value = float(text) if isinstance(text, (int, float)) else float(shown.removesuffix("%"))
    except ValueError:
        raise ValueError(f"{shown!r} is not a score: give a fraction from 0 to 1 (0.5) "
                         "or a percentage (50%)") from None
    if percent:
        value /= 100
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        if not percent and 1 < value <= 100:
            raise ValueError(f"{shown} is more than 1: give a fraction ({value / 100:g}) "
                             f"or a percentage ({shown}%)")
        raise ValueError(f"{shown} is not a score from 0 to 1 (or 0% to 100%)")
    return value


def default_db() -> str:
    return str(Path(platformdirs.user_data_dir(APP)) / "labels.db")


def user_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


@dataclass(frozen=True)
class Settings:
    db: str = field(default_factory=default_db)
    weights: str | None = None
    watch: tuple[str, ...] = ()
    batch_size: int | None = None  # None: the model's default (8 on CPU, 32 on GPU)
    device: str = "auto"
    precision: str = "auto"
    model: str = DEFAULT_MODEL  # a labelsd.model.registry name: inception_v3, efficientnet_lite0
    poll: bool = False
    log_level: str = "info"
    decode_workers: int = 0  # 0: one per core the process may use
    max_wait_ms: int = 50
    max_file_mb: int = 256  # the size cap on one image file (model.decode.MAX_FILE_MB)
    xmp: str = "off"
    xmp_min_score: float = 0.2  # labels scoring less stay out of sidecars
    search_min_score: float = DEFAULT_SEARCH_MIN_SCORE  # label matches below it stay out of searches
    metrics: str | None = None  # HOST:PORT of the Prometheus endpoint; None: off
    serve_token: str | None = None  # `labels serve` asks browsers for it (None: only off loopback, made up)
    # Keras' cache root (the weights in <it>/models): what the service's KERAS_HOME is, said in
    # the config too, so `labels model info` of a member of its group looks where it looks.
    keras_home: str | None = None
    config_file: str | None = None  # the file these settings were read from, if any

    def with_overrides(self, **values: Any) -> Settings:
        """These settings with every non-None value replaced (flags)."""
        given = {k: v for k, v in values.items() if v is not None and v != ()}
        return replace(self, **given)


def config_path(explicit: str | None = None, env: dict[str, str] | None = None) -> Path | None:
    """The config file to read: the flag, $LABELS_CONFIG, the user's, the system's.
    An explicitly named file must exist; the default locations may be absent."""
    env = os.environ if env is None else env
    named = explicit or env.get("LABELS_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    for candidate in (user_config_path(), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    known = {f.name for f in fields(Settings)} - {"config_file"}
    # `watch` may be a string or a list; `batch-size` spelled with a dash is fine too.
    values = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    if isinstance(values.get("watch"), str):
        values["watch"] = [values["watch"]]
    base = path.parent
    if "watch" in values:
        values["watch"] = tuple(str(_relative_to(base, w)) for w in values["watch"])
    for key in ("db", "weights", "keras_home"):
        if key in values and "://" not in str(values[key]):
            values[key] = str(_relative_to(base, values[key]))
    if "keras_home" in values:  # shown in paths people read: no "etc/../var"
        values["keras_home"] = os.path.normpath(values["keras_home"])
    return values


def _relative_to(base: Path, value: str) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _validate(s: Settings) -> Settings:
    if s.device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, not {s.device!r}")
    if s.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {s.precision!r}")
    check_model_name(s.model)
    if s.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, "
                          f"not {s.log_level!r}")
    if s.batch_size is not None and (not isinstance(s.batch_size, int)
                                     or not 1 <= s.batch_size <= 1024):
        raise ConfigError(f"batch size must be a whole number from 1 to 1024, "
                          f"not {s.batch_size!r}")
    if not isinstance(s.max_file_mb, int) or isinstance(s.max_file_mb, bool) or s.max_file_mb < 1:
        raise ConfigError(f"max_file_mb must be a whole number of megabytes (1 or more), "
                          f"not {s.max_file_mb!r}")
    if s.serve_token is not None and (not isinstance(s.serve_token, str) or len(s.serve_token) < 16
                                      or not s.serve_token.isascii() or not s.serve_token.isprintable()
                                      or any(c in s.serve_token for c in " ;,\"\\")):
        raise ConfigError("serve_token must be at least 16 printable ASCII characters without "
                          "spaces, quotes, commas or semicolons (python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(24))' makes one)")
    if s.xmp not in XMP_MODES:
        raise ConfigError(f"xmp must be one of {', '.join(XMP_MODES)}, not {s.xmp!r}")
    scores = {}
    for key in ("xmp_min_score", "search_min_score"):
        value = getattr(s, key)
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(f"{value!r} is not a score")
            scores[key] = parse_score(value)
        except ValueError as err:
            raise ConfigError(f"{key} must be a number from 0 to 1 or a percentage "
                              f"(0.1 or \"10%\"): {err}") from None
    return replace(s, log_level=s.log_level.lower(), watch=tuple(s.watch), **scores)


def apply_keras_home(settings: Settings, env: dict[str, str] | None = None) -> None:
    """Make the config's `keras_home` keras' cache for this process and its children
    (KERAS_HOME, which keras reads once, at import). A KERAS_HOME already in the
    environment wins, as the environment wins over the config file."""
    env = os.environ if env is None else env
    if settings.keras_home and not env.get("KERAS_HOME"):
        env["KERAS_HOME"] = settings.keras_home


def configured(config: str | None = None, env: dict[str, str] | None = None) -> set[str]:
    """The settings the config file that `load_settings` reads sets (`model`, `weights`...):
    what a person chose there, as against the defaults."""
    path = config_path(config, env)
    return set(_read_toml(path)) if path else set()


def load_settings(config: str | None = None, env: dict[str, str] | None = None,
                  **flags: Any) -> Settings:
    """Settings from flags > environment > config file > defaults.

    `flags` are the command-line values, None where not given.
    """
    env = os.environ if env is None else env
    path = config_path(config, env)
    values: dict[str, Any] = _read_toml(path) if path else {}
    for key, var in ENV_VARS.items():
        if env.get(var):
            values[key] = env[var]
    try:
        settings = Settings(**values, config_file=str(path) if path else None)
    except TypeError as err:
        raise ConfigError(f"config file {path}: {err}") from err
    return _validate(settings.with_overrides(**flags))

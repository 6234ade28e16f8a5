"""The models labelsd can run, by their `--model` name. Importing this is cheap
(no numpy, no TensorFlow): the config validates names against it.

Adding a model: a module in this package that defines `SPEC` (a `ModelSpec`) and
its loader, and one line here.
"""

from __future__ import annotations

from labelsd.errors import ConfigError

DEFAULT_MODEL = "inception_v3"

# --model name -> the module that defines its SPEC
MODELS = {
    "inception_v3": "labelsd.model.inception",
    "efficientnet_lite0": "labelsd.model.efficientnet",
}


def model_names() -> tuple[str, ...]:
    return tuple(MODELS)


def check_model_name(name: str) -> str:
    if name not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, not {name!r}")
    return name


def get_model(name: str | None = None):
    """The ModelSpec registered as `name` (default: DEFAULT_MODEL); ConfigError if unknown."""
    import importlib

    return importlib.import_module(MODELS[check_model_name(name or DEFAULT_MODEL)]).SPEC


def model_of(stored_name: str | None):
    """The ModelSpec whose labels carry `stored_name` (e.g. "InceptionV3/imagenet"), or None."""
    for key in MODELS:
        spec = get_model(key)
        if spec.owns(stored_name):
            return spec
    return None

"""`labels model info | fetch`: which model and weights the service would use, and getting
InceptionV3's."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from .context import state
from .options import DeviceOpt, ModelOpt, PrecisionOpt
from .render import render_json

model_app = typer.Typer(
    help="Inspect the model's weights; fetch InceptionV3's ImageNet weights.", no_args_is_help=True
)


@model_app.command("info")
def info(
    ctx: typer.Context,
    model: ModelOpt = None,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", metavar="FILE",
        help="A local weights file (default: LABELS_WEIGHTS, the config file, the model's own).")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: one object (model, path, source, exists, size, sha256, "
                       "official, device, runtime, precision, why, auto).")] = False,
) -> None:
    """Show which model and weights a service started with these settings would use: where
    the weights are (keras' cache: $KERAS_HOME, else `keras_home` in the config, else
    ~/.keras), their size and checksum, and the device, runtime and precision."""
    from labelsd.model import classifier, runtime
    from labelsd.model.registry import get_model
    from labelsd.paths import one_line

    settings = state(ctx).settings.with_overrides(model=model, device=device, precision=precision)
    spec = get_model(settings.model)
    facts = {"model": spec.key, **spec.weights_info(weights or settings.weights)}
    facts["device"] = classifier.describe_device(settings.device)
    facts.update(runtime.plan(settings.device, settings.precision, model=spec.key,
                              weights=weights or settings.weights))
    if as_json:
        render_json(facts)
        return
    for key in ("model", "path", "source", "exists", "size", "sha256", "official", "device", "runtime",
                "precision", "why"):
        typer.echo(f"{key + ':':11}{one_line(str(facts[key])) if facts[key] is not None else '-'}")
    if not facts["exists"]:
        typer.echo(f"hint:      {spec.weights_hint()}")


@model_app.command("fetch")
def fetch() -> None:
    """Download the ImageNet weights into keras' cache (once), verify them, print the path."""
    from rich.console import Console

    from labelsd.model.weights import fetch_weights
    from labelsd.paths import shown

    # On a terminal only: a spinner while 92 MB arrive; the one line printed is the path.
    with Console(stderr=True).status("downloading InceptionV3's ImageNet weights (92 MB)...", spinner="dots"):
        path = fetch_weights()
    typer.echo(shown(str(path)))


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")

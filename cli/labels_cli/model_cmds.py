"""`labels model info | fetch`: where the InceptionV3 weights are, and getting them."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from .context import state
from .render import render_json

model_app = typer.Typer(
    help="Inspect and fetch the InceptionV3 ImageNet weights.", no_args_is_help=True
)


@model_app.command("info")
def info(
    ctx: typer.Context,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", metavar="FILE",
        help="A local weights file (default: LABELS_WEIGHTS, the config file, keras' cache).")] = None,
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|gpu",
                                        help="auto, cpu or gpu.")] = "auto",
    precision: Annotated[Optional[str], typer.Option(
        "--precision", metavar="auto|fp32|bf16|int8",
        help="auto, fp32, bf16 or int8 (default: the config's, else auto).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: one object (path, source, exists, size, sha256, "
                       "official, device, runtime, precision, why, auto).")] = False,
) -> None:
    """Show where the weights are, their size and checksum, and the device that would be used."""
    from labelsd.model import classifier as model
    from labelsd.model import runtime
    from labelsd.model import weights as weights_files

    facts = weights_files.weights_info(weights or state(ctx).settings.weights)
    facts["device"] = model.describe_device(device)
    settings = state(ctx).settings
    facts.update(runtime.plan(device, precision or settings.precision, model=settings.model,
                              weights=weights or settings.weights))
    if as_json:
        render_json(facts)
        return
    for key in ("path", "source", "exists", "size", "sha256", "official", "device", "runtime",
                "precision", "why"):
        typer.echo(f"{key + ':':11}{facts[key] if facts[key] is not None else '-'}")
    if not facts["exists"]:
        typer.echo(f"hint:      {weights_files.HOW_TO_GET_WEIGHTS}")


@model_app.command("fetch")
def fetch() -> None:
    """Download the ImageNet weights into keras' cache (once), verify them, print the path."""
    from labelsd.model.weights import fetch_weights

    typer.echo(fetch_weights())


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")

"""`labels scan DIR`: classify a folder now, in the foreground, with a progress bar."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from .context import state
from .options import DeviceOpt, ModelOpt, PrecisionOpt


def scan(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", help="Folder to classify (recursively).", exists=True, file_okay=False,
        dir_okay=True, resolve_path=True)],
    weights: Annotated[Optional[str], typer.Option(
        "--weights", metavar="FILE", help="InceptionV3 weights file (default: LABELS_WEIGHTS, the config, "
                          "or the ImageNet weights in the keras cache).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, max=1024, metavar="N", help="Images per model call.")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    model: ModelOpt = None,
) -> None:
    """Classify every new or changed image under DIR now, with a progress bar.

    The model is loaded only when something under DIR is new or changed. The
    photos queued under DIR are the scan's while it runs (a labelsd service
    sharing the library does not take them); if the scan stops early, what it
    did not label stays queued and stderr says so. The summary accounts for
    every image found: labeled, linked (a copy of content already known),
    failed, unchanged, missing (tracked before, gone now)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from labelsd.pipeline.scan import plan_scan, scan_folder

    st = state(ctx)
    settings = st.settings.with_overrides(weights=weights, batch_size=batch_size,
                                          device=device, precision=precision, model=model)
    store = st.store(create=True)  # a scan may start a library (the service's, or one of its own)
    console = Console(stderr=True)
    # What needs classifying first: an unchanged folder never loads TensorFlow.
    from labelsd.model.registry import get_model  # the model's family, without TensorFlow

    plan = plan_scan(store, directory, get_model(settings.model).family)
    if not plan.needs_model:
        typer.echo(plan.summary())
        return
    # As the service loads it: LiteRT where it serves (no TensorFlow in this process), else TensorFlow
    from labelsd.model.runtime import describe, load_model
    from labelsd.pipeline.scan import ScanReservation

    # The rows under DIR are the scan's from here on (no service takes them), the
    # model's loading included; whatever ends the scan, what it did not label is
    # handed back, and stderr says where it stays.
    reservation = ScanReservation(store, plan.root)
    try:
        with reservation:
            with console.status("loading the model...", spinner="dots"):
                classifier = load_model(settings.weights, settings.device, settings.batch_size,
                                        settings.precision, model=settings.model)
            console.print(f"model {classifier.name} on {describe(classifier)}", highlight=False)
            columns = (TextColumn("scanning"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
            with Progress(*columns, console=console, transient=True) as bar:
                task = bar.add_task("scan", total=None, rate="")

                def on_progress(done: int, total: int) -> None:
                    speed = bar.tasks[0].speed
                    bar.update(task, completed=done, total=total,
                               rate=f"{speed:.1f} img/s" if speed else "")

                result = scan_folder(store, classifier, directory, batch_size=settings.batch_size,
                                     decode_workers=settings.decode_workers,
                                     max_wait_ms=settings.max_wait_ms, on_progress=on_progress,
                                     plan=plan, reservation=reservation)
    finally:
        if reservation.left:
            typer.echo(f"labels: {reservation.left} image(s) under {plan.root} stay queued, not labeled: "
                       f"labels scan {plan.root} again labels them (so would a labelsd service using "
                       "this library, with its own model)", err=True)
    typer.echo(result.summary())


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)

"""Typed events between the parts of the service, and the listeners that want them.

The pipeline says what happened (`batch_written` after a batch is committed);
what else should happen then (a progress bar, XMP sidecars, metrics) registers
a listener for that one event instead of living inside the writer, as beets'
plugin events do. A listener that raises is logged and never stops the work.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

# batch_written(outcomes: list[Outcome]): one committed batch, after its transaction.
# model_ran(images: int, seconds: float): one forward of the model over a batch.
# db_wrote(images: int, seconds: float): one batch's transaction, retries included.
# image_decoded(seconds: float): one image read, hashed and decoded.
EventName = Literal["batch_written", "model_ran", "db_wrote", "image_decoded"]


class Events:
    """A set of listeners by event name. One instance per service (or scan), not global."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[..., None]]] = defaultdict(list)

    def listen(self, name: EventName, listener: Callable[..., None]) -> None:
        self._listeners[name].append(listener)

    def emit(self, name: EventName, *args) -> None:
        for listener in self._listeners.get(name, ()):
            try:
                listener(*args)
            except Exception:  # noqa: BLE001 - a listener must not stop the work
                log.exception("a listener of %s failed", name)

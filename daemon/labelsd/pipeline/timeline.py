"""A record of what the pipeline's threads did when (read, decode, forward, write),
for the benchmark: it shows whether the model ever waits for I/O during a burst."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    kind: str  # read, decode, forward, write
    thread: str
    start: float  # time.monotonic()
    end: float
    images: int = 1


class Timeline:
    """Spans appended by any thread (list.append is atomic); off unless a Pipeline gets one."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    def add(self, kind: str, start: float, images: int = 1) -> None:
        self.spans.append(Span(kind, threading.current_thread().name, start,
                               time.monotonic(), images))

    def model_summary(self) -> dict:
        """From the first forward's start to the last forward's end: how long the model
        ran, how long it sat idle between forwards (the longest gap too), batch sizes."""
        forwards = sorted((s for s in self.spans if s.kind == "forward"), key=lambda s: s.start)
        if not forwards:
            return {"forwards": 0, "window_s": 0.0, "busy_s": 0.0, "idle_s": 0.0,
                    "longest_gap_s": 0.0, "busy_fraction": 0.0, "batch_sizes": []}
        window = forwards[-1].end - forwards[0].start
        busy = sum(s.end - s.start for s in forwards)
        gaps = [b.start - a.end for a, b in zip(forwards, forwards[1:])]
        return {"forwards": len(forwards), "window_s": window, "busy_s": busy,
                "idle_s": max(0.0, window - busy), "longest_gap_s": max(gaps, default=0.0),
                "busy_fraction": busy / window if window > 0 else 1.0,
                "batch_sizes": [s.images for s in forwards]}


__all__ = ["Span", "Timeline"]

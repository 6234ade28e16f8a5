"""An opt-in Prometheus endpoint (`labelsd --metrics 127.0.0.1:9464`), a listener
of the pipeline's events: nothing here runs, and `prometheus_client` is not even
imported, unless the flag (or `metrics = "HOST:PORT"` in the config) is given.

    labelsd_images_total{outcome}        labelled, linked, failed, retried, vanished
    labelsd_queue_depth                  rows waiting in the shared queue (from counters)
    labelsd_batch_size                   outcomes per committed batch (histogram)
    labelsd_model_batch_seconds          one forward of the model (histogram: batch latency)
    labelsd_model_busy_seconds_total     time in the model; its rate() is the busy ratio
    labelsd_decode_seconds               reading, hashing and decoding one image (histogram)
    labelsd_db_write_seconds             one batch's transaction, retries included (histogram)

Three queries an operator graphs (README, "Metrics"):

    sum(rate(labelsd_images_total{outcome=~"labelled|linked"}[5m]))       images/s, fleet
    rate(labelsd_model_busy_seconds_total[5m])                            busy ratio per node
    histogram_quantile(0.95, sum by (le) (rate(labelsd_db_write_seconds_bucket[5m])))
"""

from __future__ import annotations

import logging

from labelsd.errors import ConfigError
from labelsd.events import Events
from labelsd.extras import install_command
from labelsd.records import OutcomeKind
from labelsd.store import counters, workqueue
from labelsd.store.engine import Store

log = logging.getLogger(__name__)

OUTCOME_NAMES = {OutcomeKind.CLASSIFIED: "labelled", OutcomeKind.LINKED: "linked",
                 OutcomeKind.BAD_IMAGE: "failed", OutcomeKind.VANISHED: "vanished",
                 OutcomeKind.RETRY: "retried", OutcomeKind.EMBEDDED: "embedded",
                 OutcomeKind.NOT_EMBEDDED: "not_embedded"}  # the last two: the backfill's


def parse_address(value: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', all interfaces) to (host, port), or ConfigError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--metrics wants HOST:PORT (e.g. 127.0.0.1:9464), not {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_metrics(address: str) -> None:
    """Before the service creates anything: the address parses and prometheus_client is there."""
    import importlib.util

    parse_address(address)
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(_NEEDS_PROMETHEUS + install_command("metrics"))


_NEEDS_PROMETHEUS = "--metrics needs the prometheus_client package: "


class Metrics:
    """The metrics of one node, in a registry of their own, fed by `events`."""

    def __init__(self, events: Events, store: Store):
        try:
            import prometheus_client as prom
        except ImportError as err:
            raise ConfigError(_NEEDS_PROMETHEUS + install_command("metrics")) from err
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self._server = None
        self._thread = None
        reg = self.registry
        self.images = prom.Counter("labelsd_images", "Images by what became of them",
                                   ["outcome"], registry=reg)
        for name in OUTCOME_NAMES.values():
            self.images.labels(name)  # every series present from the start, at 0
        self.batch_size = prom.Histogram("labelsd_batch_size", "Outcomes per committed batch",
                                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=reg)
        self.model_seconds = prom.Histogram("labelsd_model_batch_seconds",
                                            "One forward of the model over a batch", registry=reg)
        self.model_busy = prom.Counter("labelsd_model_busy_seconds",
                                       "Seconds the model was running (rate() = busy ratio)",
                                       registry=reg)
        self.decode_seconds = prom.Histogram(
            "labelsd_decode_seconds", "Reading, hashing and decoding one image", registry=reg,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.db_write_seconds = prom.Histogram(
            "labelsd_db_write_seconds", "One batch's database transaction", registry=reg,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        depth = prom.Gauge("labelsd_queue_depth", "Rows waiting in the shared queue", registry=reg)
        depth.set_function(lambda: self._queue_depth(store))
        events.listen("batch_written", self.on_batch_written)
        events.listen("model_ran", self.on_model_ran)
        events.listen("db_wrote", lambda _images, seconds: self.db_write_seconds.observe(seconds))
        events.listen("image_decoded", self.decode_seconds.observe)

    def on_batch_written(self, outcomes) -> None:
        self.batch_size.observe(len(outcomes))
        for o in outcomes:
            name = OUTCOME_NAMES[OutcomeKind(o.kind)]
            if name == "retried" and o.claim.attempts + 1 >= workqueue.MAX_ATTEMPTS:
                name = "failed"  # out of attempts: it ends failed
            self.images.labels(name).inc()

    def on_model_ran(self, _images: int, seconds: float) -> None:
        self.model_seconds.observe(seconds)
        self.model_busy.inc(seconds)

    @staticmethod
    def _queue_depth(store: Store) -> float:
        try:
            return counters.queue_depth(store)
        except Exception:  # noqa: BLE001 - a scrape must not fail on a busy database
            log.debug("queue depth unavailable for a scrape", exc_info=True)
            return float("nan")

    def serve(self, address: str) -> tuple[str, int]:
        """Start the HTTP endpoint; returns the (host, port) it listens on."""
        host, port = parse_address(address)
        try:
            self._server, self._thread = self._prom.start_http_server(
                port, addr=host, registry=self.registry)
        except OSError as err:
            raise ConfigError(f"cannot serve metrics on {address}: {err.strerror}") from err
        bound = self._server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics", bound[0], bound[1])
        return bound[0], bound[1]

    def stop(self) -> None:
        """Stop the endpoint; safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_metrics(address: str, events: Events, store: Store) -> Metrics:
    metrics = Metrics(events, store)
    metrics.serve(address)
    return metrics


__all__ = ["Metrics", "check_metrics", "parse_address", "start_metrics"]

"""The BentoML service: binds the champion models and the feature store at start-up.

Start it with ``bentoml serve serving.service:PrecisionService`` (or ``precision
serve``). The routes live in :mod:`serving.app` and call :mod:`serving.ranking` and
:mod:`serving.segments`; this file only wires them into BentoML, which adds
``/livez``, ``/readyz`` (true once models, features and scores are loaded) and the
Prometheus ``/metrics``.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import bentoml

from features.logs import configure_logging
from features.settings import Settings
from serving.app import Runtime, create_app
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

SERVING = ServingSettings()
# Young-generation threshold once start-up objects are frozen: requests allocate
# many short-lived objects, and collecting them every 700 allocations costs tails.
GC_THRESHOLDS = (50_000, 20, 100)


def _runtime() -> Runtime:
    return bentoml.get_current_service().runtime


api = create_app(_runtime)


@bentoml.asgi_app(api, path="/")
@bentoml.service(
    name="precision_outreach",
    workers=1,
    traffic={"timeout": SERVING.request_timeout},
    http={"host": SERVING.host, "port": SERVING.port},
    logging={"access": {"enabled": False}},
    # No trace exporter is configured, so spans would only cost time per request.
    tracing={"excluded_urls": ["/recommend", "/needs", "/segments"]},
)
class PrecisionService:
    """Offers and needs for notification services; segments for campaigns."""

    def __init__(self) -> None:
        configure_logging()
        self.runtime = Runtime.load(Settings(), ServingSettings())
        if self.runtime.serving.freeze_gc:
            _quiet_garbage_collector()
        gc.callbacks.append(GC_PAUSES.observe)
        self.runtime.pauses = GC_PAUSES.figures

    def __is_ready__(self) -> bool:
        return self.runtime.ready()


def _quiet_garbage_collector() -> None:
    """Freeze what start-up made (models, tables) and collect young objects less
    often, so full collections no longer walk millions of long-lived objects.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    logger.info("froze %d start-up objects out of the collector", gc.get_freeze_count())


class CollectorPauses:
    """Count and length of the garbage collector's pauses, per generation."""

    def __init__(self) -> None:
        self.started = 0.0
        self.count = [0, 0, 0]
        self.total_ms = [0.0, 0.0, 0.0]
        self.longest_ms = [0.0, 0.0, 0.0]

    def observe(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks`` hook: time each collection."""
        if phase == "start":
            self.started = time.perf_counter()
            return
        generation = info["generation"]
        pause = 1000 * (time.perf_counter() - self.started)
        self.count[generation] += 1
        self.total_ms[generation] += pause
        self.longest_ms[generation] = max(self.longest_ms[generation], pause)

    def figures(self) -> dict[str, list[float]]:
        """Collections, total and longest pause (ms) of generations 0, 1, 2."""
        return {
            "collections": list(self.count),
            "total_ms": [round(v, 2) for v in self.total_ms],
            "longest_ms": [round(v, 2) for v in self.longest_ms],
        }


GC_PAUSES = CollectorPauses()

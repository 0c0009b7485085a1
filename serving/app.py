"""The HTTP layer mounted into the BentoML service: routes, access and errors.

Routes stay thin: they check the request body against :mod:`serving.schemas`, then
call :mod:`serving.ranking` or :mod:`serving.segments`. Access control runs first,
as an ASGI middleware, so a request without a valid key gets 401 or 403 before its
body is even read. Every error leaves through :func:`error_response`, the one place
where the product's exception family becomes an HTTP status and a JSON body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.errors import LimitExceededError, NotReadyError, PrecisionError
from features.settings import Settings
from serving import ranking, segments
from serving.auth import KeyStore, authorize, presented_key
from serving.schemas import (
    ErrorBody,
    NeedsRequest,
    NeedsResponse,
    RecommendRequest,
    RecommendResponse,
    SegmentPreview,
    SegmentRequest,
)
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 1_000_000  # 1,000 cards fit in well under 100 kB
PATH_PERMISSIONS: dict[str, str] = {
    "/recommend": "recommend",
    "/needs": "needs",
    "/segments/preview": "segments",
    "/segments/options": "segments",
    "/admin/reload": "reload",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (401, 403, 413, 422, 503)
}


class Runtime:
    """What the routes read: API keys, the scorer and the segment index.

    Loading never raises: what failed is kept in :attr:`problems`, readiness is
    false, and the routes that need the missing part answer 503 until a reload.
    """

    def __init__(self, settings: Settings, serving: ServingSettings) -> None:
        self.settings = settings
        self.serving = serving
        self.keys = KeyStore([])
        self.problems: dict[str, str] = {}
        self._scorer: ranking.Scorer | None = None
        self._segments: segments.SegmentIndex | None = None
        self.pauses: Callable[[], dict[str, Any]] | None = None

    @classmethod
    def load(cls, settings: Settings, serving: ServingSettings) -> Runtime:
        """Load keys, models, features and batch scores."""
        runtime = cls(settings, serving)
        runtime.reload()
        return runtime

    def reload(self) -> None:
        """Load every part again; a part that fails keeps its previous state."""
        problems: dict[str, str] = {}
        try:
            self.keys = KeyStore.load(self.serving.keys_path(self.settings))
        except PrecisionError as error:
            problems["api_keys"] = str(error)
        try:
            self._scorer = ranking.load_scorer(self.settings, self.serving)
        except PrecisionError as error:
            problems["models"] = str(error)
        try:
            self._segments = segments.load_segment_index(
                self.settings.scores_dir, self.settings.warehouse_dir
            )
        except PrecisionError as error:
            problems["scores"] = str(error)
        self.problems = problems
        for part, problem in problems.items():
            logger.warning("%s not loaded: %s", part, problem)

    def ready(self) -> bool:
        """Models, features and batch scores are loaded."""
        return self._scorer is not None and self._segments is not None

    def scorer(self) -> ranking.Scorer:
        """The loaded scorer.

        Raises:
            NotReadyError: when the models or features could not be loaded.
        """
        if self._scorer is None:
            raise NotReadyError(
                f"expected champion models and online features, got "
                f"{self.problems.get('models', 'nothing loaded')}; build them, then "
                "POST /admin/reload"
            )
        return self._scorer

    def segment_index(self) -> segments.SegmentIndex:
        """The loaded segment index.

        Raises:
            NotReadyError: when the batch scores could not be loaded.
        """
        if self._segments is None:
            raise NotReadyError(
                f"expected batch scores, got "
                f"{self.problems.get('scores', 'nothing loaded')}; run 'precision "
                "score', then POST /admin/reload"
            )
        return self._segments

    def preview(self, request: SegmentRequest) -> SegmentPreview:
        """The k-anonymous preview of a segment."""
        index = self.segment_index()
        return segments.preview(index, request, self.serving.k_anonymity)

    def segment_options(self) -> dict[str, Any]:
        """Filter values the segment page offers (levels only, never counts)."""
        index = self.segment_index()
        labels = segments.need_labels()
        return {
            "k": self.serving.k_anonymity,
            "needs": [
                {"need_id": need, "label": labels.get(need, need)}
                for need in index.need_ids
            ],
            "filters": {
                name: [str(level) for level in dimension.levels]
                for name, dimension in index.dimensions.items()
            },
        }

    def info(self) -> dict[str, Any]:
        """Model versions, the feature service and the state of every part."""
        facts: dict[str, Any] = {
            "ready": self.ready(),
            "problems": self.problems,
            "api_keys": len(self.keys.records),
            "k_anonymity": self.serving.k_anonymity,
        }
        if self._scorer is not None:
            facts |= self._scorer.info()
        if self.pauses is not None:
            facts["garbage_collector"] = self.pauses()
        if self._segments is not None:
            facts["segment_cards"] = self._segments.size
            facts["scored_at"] = self._segments.scored_at
        return facts


def error_response(error: Exception) -> JSONResponse:
    """The HTTP answer to any error: the product's family keeps its own status.

    Anything outside the family is a bug; it is logged with its traceback and the
    caller learns only that it happened.
    """
    if isinstance(error, PrecisionError):
        body = ErrorBody(error=error.code, message=str(error))
        return JSONResponse(body.model_dump(exclude_none=True), error.http_status)
    if isinstance(error, RequestValidationError):
        detail = [_field_error(item) for item in error.errors()]
        message = "; ".join(f"{item['field']}: {item['message']}" for item in detail)
        body = ErrorBody(error="invalid_input", message=message, detail=detail)
        return JSONResponse(body.model_dump(exclude_none=True), 422)
    if isinstance(error, StarletteHTTPException) and error.status_code == 400:
        detail = [{"field": "body", "message": str(error.detail), "type": "body"}]
        message = "body: expected a JSON object; the body could not be parsed"
        body = ErrorBody(error="invalid_input", message=message, detail=detail)
        return JSONResponse(body.model_dump(exclude_none=True), 422)
    if isinstance(error, StarletteHTTPException):
        body = ErrorBody(error="http_error", message=str(error.detail))
        return JSONResponse(body.model_dump(exclude_none=True), error.status_code)
    logger.exception("unexpected error while serving a request", exc_info=error)
    body = ErrorBody(error="internal_error", message="unexpected error; see the log")
    return JSONResponse(body.model_dump(exclude_none=True), 500)


def _field_error(item: dict[str, Any]) -> dict[str, Any]:
    """One validation problem, naming the field (``cards.3``, ``filters.post``)."""
    location = [str(part) for part in item.get("loc", ()) if part != "body"]
    field = ".".join(location) or "body"
    message = str(item.get("msg", "invalid value"))
    if item.get("type") == "extra_forbidden":
        message = "unknown field; remove it or check its spelling"
    elif item.get("type") == "json_invalid":
        field, message = "body", "expected a JSON object; the body is not valid JSON"
    return {"field": field, "message": message, "type": item.get("type")}


class AccessMiddleware:
    """Checks the API key and its role before a protected route runs."""

    def __init__(self, app: ASGIApp, get_runtime: Callable[[], Runtime]) -> None:
        self.app = app
        self.get_runtime = get_runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        permission = None
        if scope["type"] == "http":
            permission = PATH_PERMISSIONS.get(scope["path"].rstrip("/") or "/")
        if permission is None:
            await self.app(scope, receive, send)
            return

        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        try:
            runtime = self.get_runtime()
            scope.setdefault("state", {})["role"] = authorize(
                runtime.keys, presented_key(headers), permission
            )
            check_declared_size(headers)
            if "content-length" not in headers:
                receive = await buffered_body(receive)
        except PrecisionError as error:
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def check_declared_size(headers: dict[str, str]) -> None:
    """Refuse a body whose declared length is over :data:`MAX_BODY_BYTES`.

    Raises:
        LimitExceededError: naming the size sent and the limit.
    """
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise LimitExceededError(_too_large(int(declared)))


async def buffered_body(receive: Receive) -> Receive:
    """Read a body sent without a length, refusing it once it passes the limit.

    Returns:
        A ``receive`` that replays the buffered messages to the routes.

    Raises:
        LimitExceededError: naming the size read so far and the limit.
    """
    messages: list[Message] = []
    seen = 0
    while True:
        message = await receive()
        messages.append(message)
        seen += len(message.get("body", b""))
        if seen > MAX_BODY_BYTES:
            raise LimitExceededError(_too_large(seen))
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


def _too_large(size: int) -> str:
    return (
        f"request body is at least {size} bytes; the limit is {MAX_BODY_BYTES} "
        "bytes: send at most 1,000 cards of 10 digits each"
    )


def json_model(model: BaseModel) -> Response:
    """Serialise a response model once, skipping FastAPI's second validation."""
    return Response(model.model_dump_json(), media_type="application/json")


def create_app(get_runtime: Callable[[], Runtime]) -> FastAPI:
    """The routes of the service, reading models and scores from ``get_runtime``.

    Args:
        get_runtime: returns the loaded :class:`Runtime`; called per
            request so that a reload swaps what the routes see.
    """
    app = FastAPI(
        title="Precision outreach",
        description="Offers, needs and segment previews for card holders.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        responses=ERROR_RESPONSES,
    )
    app.add_middleware(AccessMiddleware, get_runtime=get_runtime)
    for family in (PrecisionError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(family, _handler)
    app.add_exception_handler(Exception, _handler)

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest) -> Response:
        """Offers for 1 to 1,000 card holders, in the order given."""
        runtime = get_runtime()
        ranking.check_batch_size(body.cards, runtime.serving.max_cards)
        return json_model(runtime.scorer().recommend(body))

    @app.post("/needs", response_model=NeedsResponse)
    async def needs(body: NeedsRequest) -> Response:
        """Calibrated need propensities for 1 to 1,000 card holders."""
        runtime = get_runtime()
        ranking.check_batch_size(body.cards, runtime.serving.max_cards)
        return json_model(runtime.scorer().needs(body))

    @app.post("/segments/preview", response_model=SegmentPreview)
    async def segment_preview(body: SegmentRequest) -> Response:
        """Privacy-safe size, reach and breakdowns of a segment."""
        return json_model(get_runtime().preview(body))

    @app.get("/segments/options")
    async def segment_options() -> dict[str, Any]:
        """Values the segment filters accept (no counts)."""
        return get_runtime().segment_options()

    @app.get("/segments", response_class=HTMLResponse, include_in_schema=False)
    async def segment_page() -> HTMLResponse:
        """The segment page for campaign managers."""
        return HTMLResponse((STATIC_DIR / "segments.html").read_text("utf-8"))

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Model versions, feature service and what is loaded."""
        return get_runtime().info()

    @app.post("/admin/reload")
    async def reload() -> dict[str, Any]:
        """Reload champion models, batch scores and API keys."""
        runtime = get_runtime()
        runtime.reload()
        if not runtime.ready():
            raise NotReadyError(
                f"expected models and scores to load, got errors {runtime.problems}; "
                "run 'precision train', 'precision promote' and 'precision score'"
            )
        return runtime.info()

    return app


async def _handler(_: Request, error: Exception) -> JSONResponse:
    return error_response(error)


def openapi_document(app: FastAPI) -> str:
    """The OpenAPI document of the routes, as JSON text."""
    return json.dumps(app.openapi(), indent=2)

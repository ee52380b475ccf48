"""The scoring API over HTTP (FastAPI): any saved run's top-k for a user or a history.

    GET  /health      liveness and the runs folder
    GET  /runs        the complete runs: model, dataset, protocol, seed, test metrics, whether it reads the target time
    POST /recommend   {"run": ..., "user_id": 1, "k": 10} or
                      {"run": ..., "history": [{"movie_id": 50, "timestamp": 881250949}, ...], "now": ..., "k": 10}
    GET  /metrics     Prometheus text format: requests, errors and latency per endpoint and run
    GET  /docs        OpenAPI documentation

Every refusal is a 4xx with {"error": {"field": ..., "message": ...}}; nothing a client sends gives a 500.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.serve.service import MAX_HISTORY, MAX_K, Event, ServeError, Service, run_summary

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HistoryEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    movie_id: int = Field(description="MovieLens movie id")
    timestamp: int = Field(description="Unix seconds")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(description="a run folder's name, as GET /runs lists it", max_length=200)
    user_id: int | None = Field(None, description="a known user (MovieLens id); or send history")
    history: list[HistoryEvent] | None = Field(None, max_length=MAX_HISTORY,
                                               description="the user's movies with their times, oldest first")
    now: int | None = Field(None, description="when the next rating happens (Unix seconds); default: a day after "
                                              "the last one. Only models that read time use it")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = Field(True, description="leave the history's movies out of the list")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests", "requests served", ["endpoint", "run", "status"],
                                registry=self.registry)
        self.errors = Counter("recsys_errors", "requests refused or failed", ["endpoint", "run", "status"],
                              registry=self.registry)
        self.latency = Histogram("recsys_request_seconds", "request latency", ["endpoint", "run"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe(self, endpoint: str, run: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, run, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, run, str(status)).inc()
        self.latency.labels(endpoint, run).observe(seconds)


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"field": field, "message": message}})


def create_app(runs_root: str | Path) -> FastAPI:
    service = Service(runs_root)
    metrics = Metrics()
    app = FastAPI(title="SS4Rec workbench scoring API", version="1",
                  description="Top-k movies from any saved run of the workbench, for a known user or a history.")

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError):
        return _error(exc.status, exc.field, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(422, "body", f"malformed JSON ({first.get('ctx', {}).get('error', 'cannot parse')})")
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return _error(422, field, str(first.get("msg", "invalid request")))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "path", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug of ours: still an answer, never a traceback
        return _error(500, "server", f"unexpected error ({type(exc).__name__}); see the server log")


    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "runs_folder": str(service.root)}

    @app.get("/runs")
    def runs() -> dict:
        return {"runs": [run_summary(r) for r in service.runs().values()]}

    @app.post("/recommend")
    async def recommend(req: RecommendRequest, request: Request) -> Response:
        # scored inline on the event loop: the work is CPU-bound under the GIL, so a thread hand-off would only add
        # latency; the reply is serialised once, directly (no generic encoder over a dict of lists)
        request.scope["recsys_run"] = req.run if req.run in service.runs() else "unknown"  # bounded metric labels
        history = None if req.history is None else [Event(e.movie_id, e.timestamp) for e in req.history]
        if not service.is_loaded(req.run):  # the first use loads a model (seconds): off the event loop
            await run_in_threadpool(service.loaded, req.run)
        reply = service.recommend(req.run, k=req.k, user_id=req.user_id, history=history, now=req.now,
                                  exclude_seen=req.exclude_seen)
        return Response(json.dumps(reply), media_type="application/json")

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.service = service
    app.add_middleware(_Measured, metrics=metrics)
    return app


class _Measured:
    """Requests, errors and latency per endpoint and run (a plain ASGI middleware: no per-request task or copy)."""

    ENDPOINTS = ("/health", "/runs", "/recommend", "/metrics")

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            self.metrics.observe(path if path in self.ENDPOINTS else "other", scope.get("recsys_run", ""), status[0],
                                 time.perf_counter() - t0)

"""The HTTP API of ``dupstream serve`` (FastAPI).

Routes: ``POST /v1/lookup``, ``POST /v1/images``, ``GET``/``DELETE /v1/images/{image_id}``,
``/healthz``, ``/readyz``, ``/metrics``; OpenAPI at ``/docs`` and ``/openapi.json``. Every
error is ``{"reason": <code>, "detail": <text>}`` with the status of ``errors.STATUS``.

The image of ``/v1/lookup`` and ``POST /v1/images`` is the body: a multipart form with the file
in field ``image``, raw bytes (``image/*`` or ``application/octet-stream``), or JSON
``{"bucket": ..., "key": ...}`` naming an object in the configured object store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dupstream import __version__
from dupstream.core.errors import DupstreamError
from dupstream.core.verdict import Verdict
from dupstream.engine.deduper import Upload
from dupstream.serve.auth import Grant, TokenTable
from dupstream.serve.batcher import Added, Job, MicroBatcher
from dupstream.serve.errors import NotReady, RequestError, RequestTimeout, status_for
from dupstream.serve.metrics import CONTENT_TYPE_LATEST, ServeMetrics
from dupstream.serve.scope import ScopedMemory

log = logging.getLogger(__name__)

MAX_ID = 512


class ObjectRef(BaseModel):
    """An image in the configured object store."""

    model_config = ConfigDict(extra="forbid")
    bucket: str = Field(..., min_length=1)
    key: str = Field(..., min_length=1)


class AddedImage(BaseModel):
    image_id: str
    tenant: str | None = Field(None, description="the tenant (None for a bank image)")
    bank: str | None = Field(None, description="the reference bank, None for an upload")
    added: bool = Field(..., description="False: an image under this id was already indexed")


class ImageInfo(BaseModel):
    image_id: str
    tenant: str | None
    bank: str | None
    sha256: str = Field(..., description="SHA-256 of the image bytes")
    origin: str = Field(..., description="the replica that indexed it")
    added_at: str | None = Field(None, description="when it was indexed (UTC, ISO 8601)")
    width: int | None = None
    height: int | None = None


class Deleted(BaseModel):
    image_id: str
    tenant: str | None
    bank: str | None
    deleted: bool = True


class ErrorBody(BaseModel):
    reason: str = Field(..., description="stable machine-readable code")
    detail: str


@dataclass
class ServerParts:
    """What the routes need; built by ``serve.build`` (or by tests around a real engine)."""

    memory: ScopedMemory
    batcher: MicroBatcher
    tokens: TokenTable
    store: Any  # dupstream.stream.blobs.ObjectStore: get(bucket, key, max_bytes=)
    max_blob_bytes: int
    request_timeout_s: float
    retry_after_s: int
    metrics: ServeMetrics
    ready: Callable[[], tuple[bool, dict]]
    #: removals onto the feed (None: this replica only)
    publish_removal: Callable[[tuple, str], None] | None = None
    buckets: frozenset[str] = frozenset()
    model_version: str = ""


_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": ObjectRef.model_json_schema()},
        },
    }
}
_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)}


def _error(exc: DupstreamError, metrics: ServeMetrics, retry_after: int) -> JSONResponse:
    status = status_for(exc)
    metrics.errors.labels(exc.reason).inc()
    headers = {}
    if status == 503:
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"reason": exc.reason, "detail": str(exc)[:1000]}, status_code=status,
                        headers=headers)


def _check_id(image_id: str | None, what: str = "image_id") -> str:
    if image_id is None:
        return ""
    if not image_id or len(image_id) > MAX_ID or any(ord(c) < 32 for c in image_id):
        raise RequestError(f"{what} must be 1-{MAX_ID} printable characters",
                           reason="bad_image_id")
    return image_id


def create_app(parts: ServerParts) -> FastAPI:
    app = FastAPI(title="dupstream lookup server", version=__version__,
                  description="One image in, one verdict out, from the shared index. "
                  "Authenticate with `Authorization: Bearer <token>`.")
    m = parts.metrics

    @app.exception_handler(DupstreamError)
    async def _dupstream_error(_req: Request, exc: DupstreamError) -> JSONResponse:
        return _error(exc, m, parts.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
                           for e in exc.errors())
        return _error(RequestError(detail, reason="bad_request"), m, parts.retry_after_s)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                   "bad_request")
        m.errors.labels(reason).inc()
        return JSONResponse({"reason": reason, "detail": str(exc.detail)},
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        m.errors.labels("internal").inc()
        return JSONResponse({"reason": "internal", "detail": type(exc).__name__},
                            status_code=500)

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "other")
        m.requests.labels(name, str(response.status_code)).inc()
        m.latency.labels(name).observe(time.perf_counter() - t0)
        return response

    def grant_of(request: Request) -> Grant:
        return parts.tokens.check(request.headers.get("authorization"))

    def check_ready() -> None:
        ok, detail = parts.ready()
        if not ok:
            raise NotReady(f"not caught up with the index feed yet: {json.dumps(detail)}")

    def tenant_of(grant: Grant, tenant: str | None) -> str:
        if tenant is not None and tenant != grant.tenant:
            raise RequestError(f"this token may not act for tenant {tenant!r}",
                               reason="tenant_forbidden")
        return grant.tenant

    async def image_of(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            # the form's spooled upload files are closed when the block ends (an early answer -
            # a full queue's 503 - must not leave them to the garbage collector)
            try:
                async with request.form(max_files=1, max_fields=16) as form:
                    file = form.get("image")
                    if file is None or isinstance(file, str):
                        raise RequestError("multipart body without a file field 'image'",
                                           reason="missing_image")
                    return await file.read()
            except RequestError:
                raise
            except Exception as exc:  # malformed multipart (python-multipart's errors)
                raise RequestError(f"malformed multipart body: {exc}",
                                   reason="bad_multipart") from exc
        if ctype == "application/json":
            try:
                raw = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError) as exc:
                raise RequestError(f"body is not JSON: {exc}", reason="bad_json") from exc
            try:
                ref = ObjectRef.model_validate(raw)
            except ValidationError as exc:
                raise RequestError("JSON body must be {\"bucket\": str, \"key\": str}: "
                                   + "; ".join(e["msg"] for e in exc.errors()),
                                   reason="bad_request") from exc
            if parts.buckets and ref.bucket not in parts.buckets:
                raise RequestError(f"bucket {ref.bucket!r} is not served",
                                   reason="bucket_forbidden")
            return await run_in_threadpool(parts.store.get, ref.bucket, ref.key,
                                           max_bytes=parts.max_blob_bytes)
        if ctype == "application/octet-stream" or ctype.startswith("image/"):
            return await request.body()
        raise RequestError(f"unsupported content type {ctype or '(none)'!r}: send "
                           "multipart/form-data (field 'image'), image bytes or JSON "
                           "{bucket, key}", reason="unsupported_media_type")

    async def run_job(job: Job, t0: float) -> Any:
        future = parts.batcher.submit(job)
        m.queue.set(parts.batcher.depth)
        left = parts.request_timeout_s - (time.monotonic() - t0)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.0, left))
        except TimeoutError:
            future.cancel()  # skipped if the worker has not reached it
            raise RequestTimeout(f"no answer within {parts.request_timeout_s}s") from None

    def banks_param(banks: str | None) -> list[str] | None:
        if banks is None:
            return None
        return [b for b in (x.strip() for x in banks.split(",")) if b]

    @app.post("/v1/lookup", response_model=Verdict, responses=_ERRORS, openapi_extra=_IMAGE_BODY,
              summary="Judge one image against the index (the stream's Verdict)")
    async def lookup(
        request: Request,
        tenant: str | None = Query(None, description="must be the token's tenant (default)"),
        add: bool = Query(False, description="also index the image (published to the feed)"),
        banks: str | None = Query(None, description="comma-separated reference banks to match "
                                  "(default: every bank the token may use)"),
        image_id: str | None = Query(None, description="the query's id (default: generated; "
                                     "the indexed id with add=true)"),
    ) -> Any:
        t0 = time.monotonic()
        grant = grant_of(request)
        tenant = tenant_of(grant, tenant)
        allowed = grant.banks_for(banks_param(banks))
        image_id = _check_id(image_id) or f"lookup-{uuid.uuid4().hex}"
        check_ready()
        data = await image_of(request)
        job = Job("lookup", Upload(image_id, data, tenant), add=add, banks=allowed)
        verdict = await run_job(job, t0)
        return JSONResponse(verdict.model_dump(mode="json"))

    @app.post("/v1/images", response_model=AddedImage, responses=_ERRORS,
              openapi_extra=_IMAGE_BODY,
              summary="Index one image without judging it (an upload, or a bank reference)")
    async def add_image(
        request: Request,
        image_id: str = Query(..., description="the id to index it under"),
        tenant: str | None = Query(None, description="must be the token's tenant (default)"),
        bank: str | None = Query(None, description="a reference bank (the token must be "
                                 "granted it) instead of the tenant's uploads"),
    ) -> Any:
        t0 = time.monotonic()
        grant = grant_of(request)
        tenant = tenant_of(grant, tenant)
        _check_id(image_id)
        if bank is not None:
            _check_id(bank, "bank")
            grant.banks_for([bank])
        check_ready()
        data = await image_of(request)
        res: Added = await run_job(Job("add", Upload(image_id, data, tenant), bank=bank), t0)
        return AddedImage(image_id=res.image_id, tenant=res.tenant, bank=res.bank,
                          added=res.added)

    def key_of(grant: Grant, image_id: str, tenant: str | None, bank: str | None) -> tuple:
        tenant = tenant_of(grant, tenant)
        _check_id(image_id)
        if bank is not None:
            grant.banks_for([bank])
            return (bank, None, image_id)
        return (None, tenant, image_id)

    @app.get("/v1/images/{image_id}", response_model=ImageInfo, responses=_ERRORS,
             summary="The public fields of an indexed image")
    def get_image(request: Request, image_id: str, tenant: str | None = None,
                  bank: str | None = None) -> Any:
        key = key_of(grant_of(request), image_id, tenant, bank)
        rec = parts.memory.record(key) if key in parts.memory else None
        if rec is None:
            raise RequestError(f"no image {image_id!r} here", reason="image_missing")
        w, h = rec.meta.get("width"), rec.meta.get("height")
        return ImageInfo(
            image_id=rec.image_id, tenant=rec.tenant, bank=rec.bank, sha256=rec.digest,
            origin=rec.origin,
            added_at=datetime.fromtimestamp(rec.ts, UTC).isoformat() if rec.ts else None,
            width=w if isinstance(w, int) else None, height=h if isinstance(h, int) else None)

    @app.delete("/v1/images/{image_id}", response_model=Deleted, responses=_ERRORS,
                summary="Take an image down: every replica forgets it (via the feed)")
    def delete_image(request: Request, image_id: str, tenant: str | None = None,
                     bank: str | None = None) -> Any:
        key = key_of(grant_of(request), image_id, tenant, bank)
        # a repeated DELETE (e.g. after a 503) publishes the removal again: idempotent
        if not parts.memory.remove(key) and not parts.memory.is_removed(key):
            raise RequestError(f"no image {image_id!r} here", reason="image_missing")
        if parts.publish_removal is not None:
            parts.publish_removal(key, parts.memory.replica_id)
        return Deleted(image_id=image_id, tenant=key[1], bank=key[0])

    @app.get("/healthz", summary="The process and its worker threads are alive")
    def healthz() -> Any:
        ok, detail = parts.batcher.alive(), {"batcher": parts.batcher.alive()}
        return JSONResponse({"ok": ok, **detail}, status_code=200 if ok else 503)

    @app.get("/readyz", summary="Caught up with the index feed; models verified")
    def readyz() -> Any:
        ok, detail = parts.ready()
        if not ok:
            return _error(NotReady(json.dumps(detail)), m, parts.retry_after_s)
        return JSONResponse({"ready": True, **detail})

    @app.get("/metrics", summary="Prometheus metrics (dupstream_serve_*)")
    def metrics() -> Response:
        m.queue.set(parts.batcher.depth)
        m.images.set(len(parts.memory))
        return Response(m.render(), media_type=CONTENT_TYPE_LATEST)

    return app

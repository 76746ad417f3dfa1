"""The FastAPI app of ``python -m vita.serve``: routes, API key, body limit, SSE streaming.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health`` and the web page at ``/``
(the one route without the API key: it is a static file that holds nothing and asks for the key).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vita.data.schema import BadSample
from vita.infer import conversation_prompt
from vita.infer.load import Loaded
from vita.serve.batcher import Batcher, Job, Result
from vita.serve.errors import ApiError
from vita.serve.request import ChatRequest, Limits, Parser
from vita.serve.speech import speech_decoder

log = logging.getLogger("vita.serve")
CONVERSATION_KINDS = {"empty conversation", "bad turn", "unknown role", "assistant first", "two user turns in a row",
                      "two assistant turns in a row", "no question", "marker/media mismatch"}
"""Kinds of :class:`~vita.data.schema.BadSample` that are about the message list (the rest are about media)."""
PUBLIC = {"/", "/favicon.ico"}


@dataclass
class Settings:
    """How the server runs (``python -m vita.serve`` flags)."""

    model_name: str
    api_key: str | None = None
    media_root: Path | None = None
    limits: Limits = field(default_factory=Limits)
    max_body_bytes: int = 64 << 20
    default_max_tokens: int = 256
    timeout_s: float = 120.0
    max_batch: int = 16
    window_s: float = 0.05
    max_queue: int = 64
    announce: str = ""
    """Printed when the app is up (the CLI's ``ready on URL`` line)."""


def create_app(loaded: Loaded, settings: Settings) -> FastAPI:
    """The app serving ``loaded``; its generation thread starts now and stops with the app."""
    speech = speech_decoder(loaded)
    batcher = Batcher(loaded, settings.max_batch, settings.window_s, settings.max_queue, speech)
    prep_lock = threading.Lock()  # prompts are built one at a time (the tokenizer is not thread-safe)
    page = resources.files("vita.serve").joinpath("static/index.html").read_text()
    inputs = ["text", *[m for m in ("image", "video", "audio") if loaded.supports(m)]]
    outputs = ["text", "audio"] if speech is not None else ["text"]

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if settings.announce:
            print(settings.announce, flush=True)
        yield
        await run_in_threadpool(batcher.close)

    app = FastAPI(title="vita.serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 405:
            err = ApiError("method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
        else:
            err = ApiError("not_found", f"no route {request.url.path}; the API is POST /v1/chat/completions, "
                           "GET /v1/models, GET /health")
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def bug(_request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        err = ApiError("internal_error", f"internal error ({type(e).__name__}: {e}); this is a bug in vita.serve, "
                       "please report it")
        return JSONResponse(err.body(), status_code=500)

    @app.middleware("http")
    async def api_key(request: Request, call_next):
        if settings.api_key and request.url.path not in PUBLIC:
            given = request.headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                err = ApiError("invalid_api_key", "missing or wrong API key; send the header "
                               "'Authorization: Bearer <key>' with the server's --api-key")
                return JSONResponse(err.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.model_name, **batcher.status()}

    def model_card() -> dict:
        return {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "vita",
                "vita": {"source": loaded.source, "kind": loaded.kind, "input": inputs, "output": outputs}}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict:
        if name != settings.model_name:
            raise ApiError("model_not_found", f"model {name!r} is not served here; this server serves "
                           f"{settings.model_name!r}", "model")
        return model_card()

    def prepare(body: dict) -> tuple[ChatRequest, dict]:
        """The checked request and its prompt item (media decoded; their temporary files are gone after)."""
        with tempfile.TemporaryDirectory(prefix="vita-serve-") as tmp:
            req = Parser(loaded.supports, Path(tmp), settings.media_root, settings.limits).parse(
                body, settings.default_max_tokens)
            if req.want_audio and speech is None:  # the speech decoder's place (vita/serve/speech.py)
                raise ApiError("no_speech_decoder", "this model has no speech decoder, so it cannot answer in audio; "
                               "ask for modalities [\"text\"]", "modalities")
            return req, _prompt(loaded, req, prep_lock)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _read_json(request, settings.max_body_bytes)
        name = body.get("model") if isinstance(body, dict) else None
        if name is not None and name != settings.model_name:
            raise ApiError("model_not_found", f"model {name!r} is not served here; use {settings.model_name!r} "
                           "(GET /v1/models)", "model")
        req, item = await run_in_threadpool(prepare, body)  # off the event loop: base64, files, media decoding
        limit = loaded.processor.prompt_max_length
        if limit and len(item["input_ids"]) + req.max_tokens > limit:
            raise ApiError("context_length_exceeded", f"the prompt ({len(item['input_ids'])} tokens) plus max_tokens "
                           f"({req.max_tokens}) is over the model's context of {limit} tokens; shorten the messages "
                           "or lower max_tokens", "messages")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(item, req, functools.partial(_deliver, loop, events))
        batcher.submit(job)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        deadline = time.monotonic() + settings.timeout_s
        if req.stream:
            return StreamingResponse(_sse(request, job, events, deadline, rid, created, settings),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            while True:
                kind, val = await _next_event(request, job, events, deadline, settings.timeout_s)
                if kind == "error":
                    raise val
                if kind == "done":
                    break  # (audio parts come whole with the result when not streaming)
        finally:
            job.cancel(job.why or "the request ended")  # no-op once done; stops the row if we left early
        return _completion(val, rid, created, settings.model_name, req)

    return app


def _deliver(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, event: tuple) -> None:
    """Hand a job's event from the generation thread to its request (gone with a closed loop: dropped)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(events.put_nowait, event)


async def _read_json(request: Request, limit: int):
    """The body as JSON, read up to ``limit`` bytes (413 past it, 400 if not JSON)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise ApiError("body_too_large", f"the body is {int(size) / 2**20:.1f} MiB, over the server's limit of "
                       f"{limit / 2**20:g} MiB (--max-body-mb); send smaller media")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ApiError("body_too_large", f"the body is over the server's limit of {limit / 2**20:g} MiB "
                           "(--max-body-mb); send smaller media")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError("invalid_json", f"the body is not JSON ({e}); send a JSON object with model and messages") from None


def _prompt(loaded: Loaded, req: ChatRequest, lock: threading.Lock) -> dict:
    """The prompt item, built by the training code as for ``vita.chat``; its errors become 4xx."""
    try:
        with lock:
            return conversation_prompt(loaded.processor, req.conv, "request")
    except BadSample as e:
        detail = req.explain(e.detail)
        if e.kind == "over-long prompt":
            raise ApiError("context_length_exceeded", f"the prompt is too long: {detail}", "messages") from None
        if e.kind in CONVERSATION_KINDS:
            raise ApiError("invalid_conversation", f"the messages are not a conversation vita can answer: {e.kind}: "
                           f"{detail} (turns count the messages after the system message)", "messages") from None
        raise ApiError("invalid_media", f"{e.kind}: {detail}", "messages") from None


async def _next_event(request: Request, job: Job, events: asyncio.Queue, deadline: float, timeout_s: float) -> tuple:
    """The job's next event; cancels it if the client left or the deadline passed (504)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            job.cancel("timed out")
            raise ApiError("timeout", f"no answer within the server's {timeout_s:g} s (--timeout); ask for fewer "
                           "max_tokens or retry when the server is less busy")
        try:
            return await asyncio.wait_for(events.get(), timeout=min(left, 0.25))
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel("client left")
                return "error", ApiError("timeout", "the client left")


def _sse(request: Request, job: Job, events: asyncio.Queue, deadline: float, rid: str, created: int,
         settings: Settings):
    """Server-sent events in OpenAI's ``chat.completion.chunk`` shape, then ``data: [DONE]``."""
    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": settings.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def gen():
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                try:
                    kind, val = await _next_event(request, job, events, deadline, settings.timeout_s)
                except ApiError as e:
                    yield f"data: {json.dumps(e.body())}\n\n"
                    return
                if kind == "delta":
                    yield chunk({"content": val})
                elif kind == "audio":  # a spoken answer's next WAV piece, then its transcript (vita/serve/speech.py)
                    yield chunk({"audio": val})
                elif kind == "error":
                    yield f"data: {json.dumps(val.body())}\n\n"
                    return
                else:
                    res: Result = val
                    extra = {"token_ids": res.ids} if job.req.return_token_ids else {}
                    yield chunk({}, res.finish_reason if res.finish_reason != "cancelled" else "stop", **extra)
                    if job.req.include_usage:
                        body = {"id": rid, "object": "chat.completion.chunk", "created": created,
                                "model": settings.model_name, "choices": [], "usage": _usage(res)}
                        yield f"data: {json.dumps(body)}\n\n"
                    yield "data: [DONE]\n\n"
                    return
        finally:
            job.cancel(job.why or "client left")  # no-op once done; stops the row if the client went away

    return gen()


def _usage(res: Result) -> dict:
    return {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
            "total_tokens": res.prompt_tokens + res.completion_tokens}


def _completion(res: Result, rid: str, created: int, model: str, req: ChatRequest) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": res.text},
              "finish_reason": res.finish_reason, "logprobs": None}
    if res.audio is not None:
        choice["message"]["audio"] = res.audio
    out = {"id": rid, "object": "chat.completion", "created": created, "model": model, "choices": [choice],
           "usage": _usage(res)}
    if req.return_token_ids:
        choice["token_ids"] = res.ids
        out["prompt_token_ids"] = res.prompt_ids
    return out

"""Layer 8: `fastbase serve EXPORT`: an exported classifier behind HTTP (Starlette on uvicorn).

The export is loaded once per server process and checked before the server listens: a file that
`load_learner` refuses, or a model that does not classify images, stops the command with the reason.
`POST /predict` takes one image (a multipart upload in the field `file`, or the raw bytes with an
`image/*` content type), or for a text classifier a JSON body `{"text": ...}` (`fastbase.serve_text`;
the data's `serve_input()` says which), and answers `{label, probability, probabilities}`. Requests are decoded in
threads off the event loop, with `DataBunch.one_item` (the decoding `Learner.predict` uses), then
queued: one task takes up to `max_batch` of them (waiting at most `max_wait_ms` for more while
others are still being decoded) and runs them through the model in one forward pass
(`deploy.predict_batch`, under `torch.inference_mode`) on an inference thread, so concurrent
clients share batches. Bad input gets a 4xx JSON `{"error": ...}` and the server keeps serving.
The API key, the bound on held requests (`--max-queue`, 503 past it), the per-request timeout
(`--timeout`) and `/metrics` are in `fastbase.serve_guard`. Needs `pip install 'fastbase[serve]'`.
"""
from __future__ import annotations

import asyncio
import html
import io
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict

import PIL.Image
import torch

from . import __version__
from .core import FastbaseError, Path, num_cpus
from .data import DataError
from .data.items import prediction_item
from .deploy import predict_batch
from .files import file_sha256
from .metrics import loss_activation
from .serve_config import ServeConfig, add_serve_flags, config_from_args
from .serve_guard import ClientError, ServeMetrics, bearer_ok, is_loopback
from .serve_text import MAX_TEXT_CHARS, decode_text_request

__all__ = ["ServeConfig", "ServedModel", "add_serve_flags", "answer", "config_from_args", "create_app", "serve"]

PAGE = Path(__file__).with_name("serve.html")  # the page of `GET /`: a form and a drop zone
CONFIG_ENV = "FASTBASE_SERVE_CONFIG"  # how `--workers N` hands the settings to each worker process


class ServedModel:
    """An export loaded for serving: `decode` turns an upload into the model's input as
    `Learner.predict` does, `predict` answers a batch of them."""

    def __init__(self, export, max_megapixels: float = 40.0, device=None, max_text_chars: int = MAX_TEXT_CHARS):
        from .learner import load_learner

        start = time.perf_counter()
        path = Path(export).expanduser()
        if not path.exists():
            raise DataError(f"No export {path}: give the export.pkl that `fastbase train` or `learn.export()` wrote.")
        self.learn = load_learner(path, device=device)
        self.file = path if path.is_file() else path / "export.pkl"
        data = self.learn.data
        self.takes_text, self.max_text_chars = data.serve_input() == "text", int(max_text_chars)
        if self.takes_text and data.classes is None:
            raise DataError(f"{self.file} is a text model without classes (a language model); fastbase serve "
                            "answers text classifiers exported by text_classifier_learner.")
        if data.input_spec()["size"] is None and not self.takes_text:
            raise DataError(f"{self.file} is not an image model with a fixed input size ({type(data).__name__}); "
                            "fastbase serve answers image classifiers exported by cnn_learner.")
        self.data, self.classes = data, None if data.classes is None else [str(c) for c in data.classes]
        self.activation = loss_activation(self.learn.loss_func)
        blank = data.one_item("xxbos" if self.takes_text else torch.zeros(3, *data.size, dtype=torch.uint8))[0]
        out = predict_batch(self.learn.model, self.activation, [blank])
        shape = tuple(out.shape)
        if self.classes is None or data.serves_own_answer:  # a task's own terms (points, boxes), or refused
            try:
                data.serve_answer(out[0], tuple(data.size))
            except DataError as e:
                raise DataError(f"{self.file} has no classes (a regression or segmentation export); fastbase serve "
                                "answers class probabilities, or a task's own answer (points).") from e
        elif shape != (1, len(self.classes)):
            raise DataError(f"{self.file} gives outputs of shape {shape[1:]} per image, not one probability per class "
                            f"({len(self.classes)}); fastbase serve answers image classifiers.")
        self.max_pixels = int(max_megapixels * 1e6)
        self.sha256 = file_sha256(self.file)
        written = torch.load(self.file, map_location="cpu", weights_only=True, mmap=True)
        self.written_by = written.get("fastbase_version")
        self.load_seconds = time.perf_counter() - start

    def info(self) -> dict:
        data, spec = self.data, self.learn.model_spec
        shape = {"max_text_chars": self.max_text_chars} if self.takes_text else {
            "input_size": list(data.size), "resize_method": data.resize_method.name,
            "normalization": None if data.stats is None else {"mean": data.stats[0], "std": data.stats[1]}}
        return {"classes": self.classes, "multi_label": bool(data.multi_label), "input": data.serve_input(), **shape,
                "model": {"file": str(self.file), "sha256": self.sha256, "factory": spec.get("factory"),
                          "kwargs": spec.get("kwargs", {}), "exported_by_fastbase": self.written_by},
                "fastbase_version": __version__, "max_megapixels": self.max_pixels / 1e6}

    def decode(self, body: bytes, name: str) -> tuple[torch.Tensor, tuple[int, int]]:
        """The normalised `(1, 3, h, w)` input for the image file bytes `body` (called `name` in errors),
        and the upload's own (h, w). A text model's `body` is JSON `{"text": ...}` (`decode_text_request`)."""
        if self.takes_text:
            return self.data.one_item(decode_text_request(body, self.max_text_chars))[0], (1, 0)
        if not body:
            raise ClientError(422, f"{name} is empty (0 bytes); send the bytes of an image file.")
        try:
            with PIL.Image.open(io.BytesIO(body)) as img:  # the header only: nothing is decoded yet
                w, h = img.size
                turned = _quarter_turned(img)
        except PIL.Image.DecompressionBombError as e:
            raise ClientError(413, f"{name} is too large to decode ({e}).") from e
        except Exception as e:
            raise ClientError(422, f"{name} is not an image PIL can read ({len(body)} bytes starting "
                                   f"{body[:16]!r}).") from e
        if w * h > self.max_pixels:
            raise ClientError(413, f"{name} is {w}x{h} pixels ({w * h / 1e6:.1f} megapixels), over the server's limit "
                                   f"of {self.max_pixels / 1e6:g} (--max-megapixels); send a smaller image.")
        try:
            return self.data.one_item(body)[0], ((w, h) if turned else (h, w))
        except DataError as e:
            raise ClientError(422, f"{name} {str(e).split(': it ', 1)[-1].rstrip('.')}.") from e

    def predict(self, xs: list[tuple[torch.Tensor, tuple[int, int]]]) -> list[dict]:
        """One answer per decoded upload of `xs` (`decode`'s), from one forward pass over all of them."""
        if self.takes_text:  # documents of different lengths: one forward pass each
            probs = torch.cat([predict_batch(self.learn.model, self.activation, [x]) for x, _ in xs])
        else:
            probs = predict_batch(self.learn.model, self.activation, [x for x, _ in xs])
        if self.classes is None or self.data.serves_own_answer:
            return [self.data.serve_answer(row, hw) for row, (_, hw) in zip(probs, xs)]
        return [answer(row, self.classes, bool(self.data.multi_label)) for row in probs]


def answer(row: torch.Tensor, classes: list[str], multi_label: bool = False, thresh: float = 0.5) -> dict:
    """The JSON answer for one row of probabilities: the label as `prediction_item` decides it, its
    probability, and every class's. Multi-label: the labels above `thresh` and their probabilities."""
    item, _ = prediction_item(row, classes, multi_label, thresh)
    values = [round(float(p), 6) for p in row]
    top = [values[i] for i in item.data.nonzero().view(-1).tolist()] if multi_label else max(values)
    return {"label": item.obj, "probability": top, "probabilities": dict(zip(classes, values))}


def _quarter_turned(img) -> bool:
    """Whether the EXIF orientation of the opened `img` turns it a quarter (its height is its width);
    False when the metadata cannot be read (the decoder then says what is wrong with the file)."""
    try:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 -- a truncated or odd file: its decode names the problem
        return False


class Batcher:
    """Collects decoded requests into batches of up to `max_batch` and runs each batch on one
    inference thread. After the first request of a batch it waits for more only while other
    requests are still being decoded (so a lone client is not delayed), and at most `max_wait_ms`."""

    def __init__(self, model: ServedModel, max_batch: int, max_wait_ms: float, metrics: ServeMetrics | None = None):
        self.model, self.max_batch, self.max_wait, self.metrics = model, max_batch, max_wait_ms / 1000, metrics
        self.queue: asyncio.Queue | None = None
        self.infer = ThreadPoolExecutor(1, thread_name_prefix="fastbase-infer")
        self.batches = self.items = self.decoding = 0

    async def submit(self, decode) -> dict:
        """The answer for the input that awaiting `decode` gives, predicted in a batch."""
        self.decoding += 1
        try:
            x = await decode
        finally:
            self.decoding -= 1
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((x, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0 or not self.decoding:  # nothing more is on its way
                        break
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), left))
                    except TimeoutError:
                        break
            batch = [(x, f) for x, f in batch if not f.done()]  # a client that went away is not served
            if not batch:
                continue
            try:
                answers = await loop.run_in_executor(self.infer, self.model.predict, [x for x, _ in batch])
            except Exception as e:  # noqa: BLE001 -- one failed batch fails its requests, not the server
                answers = [e] * len(batch)
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(batch))
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    (future.set_exception if isinstance(answer, Exception) else future.set_result)(answer)


class _BodyTooLarge(Exception):
    pass


def _limited(receive, limit: int):
    """`receive` that raises `_BodyTooLarge` once the request body passes `limit` bytes."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _BodyTooLarge()
        return message
    return wrapped


def create_app(config: ServeConfig, model: ServedModel | None = None):
    """The Starlette app for `config` (the export loaded now unless `model` is given)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    model = model or ServedModel(config.export, config.max_megapixels)
    metrics = ServeMetrics()
    metrics.model_load.set(model.load_seconds)
    batcher = Batcher(model, config.max_batch, config.max_wait_ms, metrics)
    decoders = ThreadPoolExecutor(max(2, num_cpus()), thread_name_prefix="fastbase-decode")
    limit = int(config.max_body_mb * 2**20)
    started = time.time()
    held = 0  # predictions between arrival and answer; the event loop is the only writer

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)

    async def read_upload(request) -> tuple[bytes, str]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _BodyTooLarge()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        request = Request(request.scope, _limited(request.receive, limit))
        if model.takes_text:
            if kind != "application/json":
                raise ClientError(415, f"Content type {kind or 'none'!r} is not accepted: this text classifier takes "
                                       'application/json, {"text": "..."}.')
            return await request.body(), "the JSON body"
        if kind == "multipart/form-data":
            async with request.form(max_files=1, max_fields=20, max_part_size=limit) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    got = ", ".join(repr(k) for k in form) or "none"
                    raise ClientError(422, f"The form has no file in the field 'file' (fields sent: {got}); "
                                           "send the image as file=@photo.jpg.")
                return await upload.read(), f"upload {upload.filename or 'file'!r}"
        if kind.startswith("image/"):
            return await request.body(), f"the {kind} body"
        raise ClientError(415, f"Content type {kind or 'none'!r} is not accepted: send multipart/form-data with the "
                               "image in the field 'file', or the raw image bytes as image/jpeg, image/png...")

    async def answer_upload(request, stage: list) -> JSONResponse:
        try:
            body, name = await read_upload(request)
            stage[0] = "predicting"
            decode = asyncio.get_running_loop().run_in_executor(decoders, model.decode, body, name)
            return JSONResponse(await batcher.submit(decode))
        except ClientError as e:
            return error(e.status, str(e))
        except _BodyTooLarge:
            return error(413, f"The request body is over the server's limit of {config.max_body_mb:g} MB "
                              "(--max-body-mb); send a smaller image.")
        except Exception as e:  # noqa: BLE001 -- the client hears what failed; the server keeps serving
            if type(e).__name__ == "MultiPartException":
                return error(400, f"The multipart form cannot be read: {e}")
            return error(500, f"Prediction failed: {type(e).__name__}: {e}")

    async def predict(request):
        nonlocal held
        if held >= config.max_queue:  # refused before its body is read: memory stays flat under a burst
            metrics.rejected.inc()
            return error(503, f"The server is holding {held} predictions, its limit (--max-queue); retry in a "
                              "moment.", headers={"Retry-After": "1"})
        held += 1
        metrics.queue_depth.set(held)
        stage = ["receiving"]
        try:
            return await asyncio.wait_for(answer_upload(request, stage), config.timeout)
        except TimeoutError:
            if stage[0] == "receiving":
                return error(408, f"The request body did not arrive within the server's --timeout of "
                                  f"{config.timeout:g} s; send it again.")
            return error(504, f"No prediction within the server's --timeout of {config.timeout:g} s (the model is "
                              "busy); retry later.", headers={"Retry-After": "1"})
        finally:
            held -= 1
            metrics.queue_depth.set(held)

    async def page(request):
        return HTMLResponse(PAGE.read_text().replace("__CLASSES__", html.escape(", ".join(model.classes))))

    async def health(request):
        return JSONResponse({"status": "ok", "uptime_s": round(time.time() - started, 3),
                             "batches": batcher.batches, "predictions": batcher.items, "held": held})

    async def info(request):
        hidden = ("export", "host", "port", "api_key")
        settings = {k: v for k, v in asdict(config).items() if k not in hidden}
        return JSONResponse({**model.info(), "server": {**settings, "api_key": config.api_key is not None}})

    async def metrics_page(request):
        body, kind = metrics.render()
        return Response(body, media_type=kind)

    def route(path: str, handler, closed: bool, methods=None) -> Route:
        """`handler` at `path`, counted and timed in the metrics; `closed`: only with the API key (if set)."""
        async def endpoint(request):
            start = time.perf_counter()
            if closed and config.api_key and not bearer_ok(request.headers.get("authorization"), config.api_key):
                response = error(401, f"{path} needs the server's API key: send the header 'Authorization: Bearer "
                                      "KEY'.", headers={"WWW-Authenticate": 'Bearer realm="fastbase"'})
            else:
                response = await handler(request)
            metrics.observe(path, response.status_code, time.perf_counter() - start)
            return response
        return Route(path, endpoint, methods=methods)

    @asynccontextmanager
    async def lifespan(app):
        batcher.queue = asyncio.Queue()
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        decoders.shutdown(wait=False, cancel_futures=True)
        batcher.infer.shutdown(wait=False, cancel_futures=True)

    routes = [route("/", page, closed=False), route("/health", health, closed=False),
              route("/predict", predict, closed=True, methods=["POST"]), route("/info", info, closed=True),
              route("/metrics", metrics_page, closed=True)]
    return Starlette(routes=routes, lifespan=lifespan)


def create_app_from_env():
    """The app for one of `--workers N` processes: the settings come from the environment."""
    config = ServeConfig(**json.loads(os.environ[CONFIG_ENV]))
    _set_threads(config)
    return create_app(config)


def _set_threads(config: ServeConfig) -> None:
    torch.set_num_threads(config.threads or max(1, num_cpus() // config.workers))


def _need_packages() -> None:
    try:
        import multipart  # noqa: F401 -- Starlette parses forms with python-multipart
        import prometheus_client  # noqa: F401 -- /metrics
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise FastbaseError(f"fastbase serve needs Starlette, uvicorn, python-multipart and prometheus-client ({e}): "
                            "pip install 'fastbase[serve]'.") from e


def serve(config: ServeConfig, announce=None) -> None:
    """Check the export, then serve it until interrupted; with `workers` > 1, each worker process
    loads its own copy of the model. `announce`, if given, is called once the export is accepted and
    before the server listens, with the address and what `GET /info` will answer (`--json` prints it)."""
    _need_packages()
    import uvicorn

    _set_threads(config)
    if not is_loopback(config.host) and not config.api_key:
        warnings.warn(f"fastbase serve listens on {config.host}, beyond this machine, without an API key: anyone who "
                      "reaches the port can use the model. Set --api-key or FASTBASE_API_KEY.", stacklevel=2)
    model = ServedModel(config.export, config.max_megapixels)  # refused here, before listening
    if announce is not None:
        announce({"url": f"http://{config.host}:{config.port}/", "workers": config.workers, **model.info()})
    options = {"host": config.host, "port": config.port, "log_level": "info", "timeout_graceful_shutdown": 5}
    if config.workers == 1:
        uvicorn.run(create_app(config, model), **options)
        return
    del model  # the workers load their own
    os.environ[CONFIG_ENV] = json.dumps(asdict(config))
    # a worker answers uvicorn's health check only once it has imported fastbase and loaded the model
    uvicorn.run("fastbase.serve:create_app_from_env", factory=True, workers=config.workers,
                timeout_worker_healthcheck=120, **options)

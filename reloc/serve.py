"""``reloc serve``: an HTTP localization service (FastAPI) over one map kept by the process.

    POST /localize   multipart form: ``image`` (JPEG or PNG bytes) and ``focal`` (pixels, principal
                     point at the centre) or ``camera`` ("MODEL WIDTH HEIGHT PARAMS...", COLMAP)
                     -> {name, success, reason, pose: {qvec (w, x, y, z), tvec} (cam_from_world),
                         num_inliers, timings}
    GET  /health     -> {status: "ok"}
    GET  /map        -> the map: folder, pipeline, --set settings, scene, landmarks, bytes
    GET  /docs       OpenAPI documentation (FastAPI)

Bounded: a request larger than ``max_request_bytes`` gets 413, an image with more than
``max_pixels`` pixels 413, a content type other than JPEG / PNG 415, an image that does not decode
400, missing intrinsics 422; at most ``max_concurrent`` localizations run at once, a request that
waits ``queue_s`` for a free one gets 503, one that runs past ``timeout_s`` 504. Every error is
JSON ``{"error": "..."}`` naming the problem. A query that cannot be localized is a 200 with
``success: false`` and PnP's reason, never a prior pose.
The map's landmarks and retrieval index stay in memory between requests (:mod:`reloc.io.memo`).

``reloc serve --ray --replicas N`` runs the same app as a Ray Serve deployment of N replicas (one
process and CPU each, each holding the map), on a local Ray or a cluster (``--address``).
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image

from .datasets.folder import parse_camera_tokens
from .errors import RelocError
from .io.map_folder import LANDMARKS_FILE, read_map_record
from .io.memo import read_once
from .mapping.store import read_sparse_map
from .pipeline.runner import folder_bytes, load_map_pipeline, localize
from .types import Camera, Frame, QueryResult

IMAGE_TYPES = {"image/jpeg": ".jpg", "image/png": ".png"}
QUEUED_PER_REPLICA = 32  # reloc serve --ray: requests waiting per replica before Serve answers 503


@dataclass
class ServiceLimits:
    max_request_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_concurrent: int = 2
    queue_s: float = 30.0  # a request waits this long for a free slot
    timeout_s: float = 60.0


class RequestError(Exception):
    """A bad request: HTTP ``status`` and the message returned as ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def result_json(result: QueryResult) -> dict:
    pose = None
    if result.pose is not None:
        pose = {"qvec": [float(v) for v in result.pose.qvec], "tvec": [float(v) for v in result.pose.t]}
    return {
        "name": result.name,
        "success": result.pose is not None,
        "reason": result.reason,
        "pose": pose,
        "num_inliers": int(result.num_inliers),
        "timings": {stage: round(float(s), 4) for stage, s in result.timings.items()},
    }


def query_camera(width: int, height: int, focal: float | None, camera: str | None) -> Camera:
    """The query's camera from ``focal`` or a ``camera`` line, checked against the image size."""
    if focal is None and not camera:
        raise RequestError(422, "intrinsics missing: give the form field 'focal' (pixels) or 'camera'")
    if focal is not None and camera:
        raise RequestError(422, "give either 'focal' or 'camera', not both")
    try:
        if camera:
            parsed = parse_camera_tokens(camera.split(), "form field 'camera'")
        else:
            parsed = Camera("SIMPLE_PINHOLE", width, height, (float(focal), width / 2, height / 2))
    except (RelocError, ValueError) as error:
        raise RequestError(422, str(error)) from None
    if (parsed.width, parsed.height) != (width, height):
        raise RequestError(
            422, f"form field 'camera' is for {parsed.width}x{parsed.height} images, the image is {width}x{height}"
        )
    return parsed


def decoded_size(data: bytes, limits: ServiceLimits) -> tuple[int, int]:
    """(width, height) of the image ``data``, fully decoded once so that a truncated file fails here."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise RequestError(413, f"image of {width}x{height} pixels, more than {limits.max_pixels}")
            image.load()
    except RequestError:
        raise
    except Exception as error:
        raise RequestError(400, f"image does not decode: {type(error).__name__}: {error}") from None
    return width, height


def create_app(map_dir: Path, limits: ServiceLimits | None = None, overrides: list[str] | None = None) -> FastAPI:
    """The FastAPI app serving ``map_dir`` (checked and loaded here, before the first request),
    its localization settings changed by ``overrides`` (``reloc serve --set``; listed by GET /map)."""
    limits = limits or ServiceLimits()
    pipeline = load_map_pipeline(map_dir, overrides)
    record = read_map_record(map_dir)
    slots = threading.BoundedSemaphore(limits.max_concurrent)
    app = FastAPI(title="reloc localization service", description=__doc__.split("\n\n")[0])

    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, error: Exception):
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)

    @app.middleware("http")
    async def bounded_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
            return JSONResponse(
                {"error": f"request of {length} bytes, more than {limits.max_request_bytes}"}, status_code=413
            )
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/map")
    async def map_info() -> dict:
        landmarks_path = map_dir / LANDMARKS_FILE
        landmarks = len(read_once(read_sparse_map, landmarks_path).points) if landmarks_path.is_file() else None
        return {
            "map": str(map_dir.resolve()),
            "pipeline": pipeline.name,
            "description": pipeline.description,
            "settings": list(overrides or []),
            "scene": record.get("dataset"),
            "landmarks": landmarks,
            "bytes": folder_bytes(map_dir),
        }

    @app.post("/localize")
    async def localize_image(
        image: UploadFile = File(..., description="JPEG or PNG bytes"),
        focal: float | None = Form(None, description="focal length in pixels, principal point at the centre"),
        camera: str | None = Form(None, description="COLMAP camera line: MODEL WIDTH HEIGHT PARAMS..."),
    ) -> dict:
        if image.content_type not in IMAGE_TYPES:
            raise RequestError(415, f"content type {image.content_type!r}: send image/jpeg or image/png")
        data = await image.read()
        if len(data) > limits.max_request_bytes:
            raise RequestError(413, f"image of {len(data)} bytes, more than {limits.max_request_bytes}")
        width, height = decoded_size(data, limits)
        query_cam = query_camera(width, height, focal, camera)
        if not await run_in_threadpool(slots.acquire, True, limits.queue_s):
            raise RequestError(
                503, f"busy: {limits.max_concurrent} localizations ran for {limits.queue_s} s; retry later"
            )

        def run_and_release() -> QueryResult:  # the slot is held until the work ends, even past a timeout
            try:
                return localize_bytes(map_dir, pipeline, data, image.filename or "query", query_cam)
            finally:
                slots.release()

        try:
            result = await asyncio.wait_for(run_in_threadpool(run_and_release), limits.timeout_s)
        except TimeoutError:
            raise RequestError(504, f"localization took longer than {limits.timeout_s} s") from None
        return result_json(result)

    return app


def localize_bytes(map_dir: Path, pipeline, data: bytes, name: str, camera: Camera) -> QueryResult:
    """Localize one image given as encoded bytes (written to a temporary file for the graph)."""
    suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") else ".img"
    with tempfile.TemporaryDirectory(prefix="reloc-serve-") as folder:
        path = Path(folder) / f"query{suffix}"
        path.write_bytes(data)
        (result,) = localize(map_dir, [Frame(Path(name).name, path, camera)], pipeline=pipeline)
    return result


def ray_serve_application(map_dir: Path, limits: ServiceLimits, replicas: int, overrides: list[str] | None = None):
    """The same app as a Ray Serve application of ``replicas`` replicas (one CPU each), each
    loading the map once and allowing ``limits.max_concurrent`` localizations; Serve's proxy
    spreads the requests over them and refuses (503) beyond ``QUEUED_PER_REPLICA`` waiting per replica."""
    from ray import serve

    map_dir = map_dir.resolve()

    def build_app() -> FastAPI:  # runs on each replica
        return create_app(map_dir, limits, overrides)

    deployment = serve.deployment(
        serve.ingress(build_app)(),
        name="reloc-localize",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": 1},
        max_ongoing_requests=limits.max_concurrent * 2,
        max_queued_requests=QUEUED_PER_REPLICA * replicas,
    )
    return deployment.bind()

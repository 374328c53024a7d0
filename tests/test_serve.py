"""`reloc serve` in a subprocess on a loopback port, answered by a real HTTP client: a real query
localizes, bad requests get their documented 4xx JSON error, and the service stays up."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reloc.datasets import load_dataset
from reloc.geometry.errors import pose_error
from reloc.types import Pose

from .overlap import mapped_share
from .scenes import mapped_room

httpx2 = pytest.importorskip("httpx2")
pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow
RELOC = str(Path(sys.executable).with_name("reloc"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served_map(module_folder) -> tuple[Path, Path]:
    return mapped_room(module_folder, query_frames=4)


@pytest.fixture(scope="module", params=["uvicorn", "ray-serve"])
def service(request, served_map):
    """The scene (seed 8) and the URL of `reloc serve` on its default map, limited to 0.5 MB
    requests: one process (uvicorn), or a Ray Serve deployment of 2 replicas (--ray)."""
    scene, map_dir = served_map
    port = free_port()
    command = [RELOC, "serve", str(map_dir), "--port", str(port), "--max-request-mb", "0.5", "--timeout", "60"]
    if request.param == "ray-serve":
        pytest.importorskip("ray.serve")
        command += ["--ray", "--replicas", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx2.TransportError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"reloc serve did not come up: {process.communicate()[0].decode()[-2000:]}")
    yield scene, url
    process.terminate()
    process.wait(timeout=60)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def post(url: str, data: bytes, content_type: str = "image/png", **fields) -> httpx2.Response:
    files = {"image": ("query.png", data, content_type)}
    return httpx2.post(f"{url}/localize", files=files, data=fields, timeout=120)


def assert_still_up(url: str) -> None:
    assert httpx2.get(f"{url}/health", timeout=10).json() == {"status": "ok"}


def test_a_real_query_localizes_and_the_map_describes_itself(service):
    scene, url = service
    shares = mapped_share(scene)
    frame = max(load_dataset("7scenes", scene).frames("test"), key=lambda f: shares[f.name])
    camera = f"{frame.camera.model} {frame.camera.width} {frame.camera.height} " + " ".join(
        map(str, frame.camera.params)
    )
    response = post(url, Path(frame.image_path).read_bytes(), camera=camera)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["success"] and answer["num_inliers"] >= 20 and set(answer["timings"]) >= {"features", "pnp"}
    truth = load_dataset("7scenes", scene).ground_truth()[frame.name].pose
    dt, dr = pose_error(Pose.from_qvec_tvec(answer["pose"]["qvec"], answer["pose"]["tvec"]), truth)
    assert dt < 0.02 and dr < 1.0, (dt, dr)
    described = httpx2.get(f"{url}/map", timeout=10).json()
    assert described["pipeline"] == "default" and described["landmarks"] > 1000 and described["bytes"] > 0


def test_bad_requests_get_their_4xx_and_the_service_stays_up(service):
    scene, url = service
    image = np.asarray(Image.open(load_dataset("7scenes", scene).frames("test")[0].image_path).convert("RGB"))
    good = png_bytes(image[:240, :320])
    cases = [
        (post(url, good[: len(good) // 2], focal="585"), 400, "image does not decode"),
        (post(url, good), 422, "intrinsics missing"),
        (post(url, good, camera="PINHOLE 640 480 585 585 320 240"), 422, "for 640x480 images, the image is 320x240"),
        (post(url, good, content_type="text/plain", focal="585"), 415, "send image/jpeg or image/png"),
        (
            post(url, png_bytes(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)), focal="585"),
            413,
            "more than 500000",
        ),
    ]
    for response, status, message in cases:
        assert response.status_code == status and message in response.json()["error"], response.text
        assert_still_up(url)


def test_a_query_that_cannot_be_localized_is_an_answer_with_its_reason(service):
    _, url = service
    noise = np.random.default_rng(1).integers(0, 255, (240, 320, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=30)
    response = post(url, buffer.getvalue(), content_type="image/jpeg", focal="300")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert not answer["success"] and answer["pose"] is None and answer["reason"]


def test_set_changes_the_served_localization_settings_and_a_mapping_setting_is_refused(served_map):
    """`reloc serve --set` (create_app's overrides): the settings are listed by GET /map and
    applied to every query (a query that localizes with the map's own settings is an answer
    with its reason when PnP must find more inliers than it has keypoints); a mapping setting
    is refused before the service starts."""
    from fastapi.testclient import TestClient

    from reloc.errors import PipelineError
    from reloc.serve import create_app

    scene, map_dir = served_map
    shares = mapped_share(scene)
    frame = max(load_dataset("7scenes", scene).frames("test"), key=lambda f: shares[f.name])
    camera = f"{frame.camera.model} {frame.camera.width} {frame.camera.height} " + " ".join(
        map(str, frame.camera.params)
    )
    client = TestClient(create_app(map_dir, overrides=["pnp.pnp.min_inliers=100000"]))
    assert client.get("/map").json()["settings"] == ["pnp.pnp.min_inliers=100000"]
    files = {"image": ("query.png", Path(frame.image_path).read_bytes(), "image/png")}
    answer = client.post("/localize", files=files, data={"camera": camera}).json()
    assert not answer["success"] and answer["pose"] is None and "< 100000)" in answer["reason"], answer
    with pytest.raises(PipelineError, match="a built map's localization settings can change, not its mapping"):
        create_app(map_dir, overrides=["landmarks.neighbours=3"])

"""Latency and throughput of `reloc serve` under a bounded load on the loopback interface.

    python benchmarks/serve_load.py --map runs/demo/map --dataset 7scenes --root data/synthetic-7scenes-seed0 \\
        --requests 200 --clients 4

Starts `reloc serve MAP` (with ``--ray-replicas N``: ``reloc serve MAP --ray --replicas N``) on a
free loopback port, then ``--clients`` threads send ``--requests`` requests in all: the dataset's
test images in turn (with their own camera line), and every tenth request a truncated image (a
bad input that must get 400). Prints p50 / p99 latency of the good requests, throughput, and
every status code seen; a request without a response counts as lost.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import numpy as np

from reloc.datasets import load_dataset


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-concurrent", type=int, default=2, help="localization slots (per replica with --ray)")
    parser.add_argument("--ray-replicas", type=int, default=0, help="serve with --ray --replicas N (0: one process)")
    args = parser.parse_args()
    frames = load_dataset(args.dataset, args.root).frames("test")
    port = free_port()
    reloc = str(Path(sys.executable).with_name("reloc"))
    command = [reloc, "serve", str(args.map), "--port", str(port), "--max-concurrent", str(args.max_concurrent)]
    if args.ray_replicas:
        command += ["--ray", "--replicas", str(args.ray_replicas)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.5)
        outcomes: list[tuple[int, bool, float, int]] = []  # (request, bad input, seconds, status)
        lock, next_request = threading.Lock(), iter(range(args.requests))

        def client() -> None:
            with httpx2.Client(timeout=120) as session:
                for index in iter(lambda: next(next_request, None), None):
                    frame = frames[index % len(frames)]
                    data = Path(frame.image_path).read_bytes()
                    bad = index % 10 == 9
                    if bad:
                        data = data[: len(data) // 3]
                    camera = " ".join(
                        [frame.camera.model, str(frame.camera.width), str(frame.camera.height)]
                        + [str(p) for p in frame.camera.params]
                    )
                    kind = "image/png" if frame.image_path.suffix.lower() == ".png" else "image/jpeg"
                    started = time.perf_counter()
                    try:
                        status = session.post(
                            f"{url}/localize",
                            files={"image": (frame.image_path.name, data, kind)},
                            data={"camera": camera},
                        ).status_code
                    except httpx2.HTTPError:
                        status = 0
                    with lock:
                        outcomes.append((index, bad, time.perf_counter() - started, status))

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    good = np.array([seconds for _, bad, seconds, status in outcomes if not bad and status == 200])
    statuses: dict[str, int] = {}
    for _, bad, _, status in outcomes:
        key = f"{'bad' if bad else 'good'} → {status or 'no response'}"
        statuses[key] = statuses.get(key, 0) + 1
    lost = args.requests - len(outcomes)
    print(f"{len(outcomes)} of {args.requests} requests answered ({lost} lost), {args.clients} clients")
    print("| p50 latency | p99 latency | throughput | statuses |")
    print("|---:|---:|---:|---|")
    print(
        f"| {1000 * np.percentile(good, 50):.0f} ms | {1000 * np.percentile(good, 99):.0f} ms | "
        f"{len(outcomes) / wall:.2f} requests/s | {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))} |"
    )


if __name__ == "__main__":
    main()

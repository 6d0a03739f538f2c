"""Cold start of the serving image under podman: seconds from `podman run` to the first 200 from `/health`.

Runs the image as tests/containers run it (read-only root, /tmp on tmpfs, 2 GiB, PORT from the environment,
the checkpoint mounted read-only, host network, loopback only), `--repeat` times, and times the phases that
make it up, each in a fresh container of the same image:

- `container_s`: `podman run --rm --entrypoint true`: creating, starting and removing a container.
- `python_torch_s`: `python -c "import torch"`: the interpreter and torch's shared libraries, read from the
  image's layers.
- `server_imports_s`: `python -c "import imagenette_drift.serve.app"`: everything the server imports.
- `health_s`: the whole cold start; what it has beyond the imports is the model loaded and warmed up.

    python benchmarks/container_cold_start.py --checkpoint outputs/quickstart/checkpoints/last.ckpt \\
        --output benchmarks/results/container_cold_start.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

IMAGE = "localhost/imagenette-serve:local"
RUN = ["podman", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--memory", "2g", "--network", "host"]


def timed(command: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_seconds(image: str, checkpoint: Path, timeout: float = 300) -> float:
    """`podman run -d` of the server, then GET /health every 50 ms until 200; the container is removed."""
    port, name = free_port(), f"cold-start-{uuid.uuid4().hex[:8]}"
    flags = ["-d", "--name", name, "-e", f"PORT={port}", "-e", "MODEL_URI=/models/" + checkpoint.name]
    flags += ["-v", f"{checkpoint.parent.resolve()}:/models:ro"]
    start = time.monotonic()
    subprocess.run(
        [*RUN, *flags, image, "--host", "127.0.0.1", "--threads", "1"], check=True, capture_output=True
    )
    try:
        while time.monotonic() - start < timeout:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return time.monotonic() - start
            time.sleep(0.05)
        raise TimeoutError(f"/health did not answer 200 within {timeout} s")
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    python = [*RUN, "--entrypoint", "python", args.image, "-c"]
    runs: dict[str, list[float]] = {
        "container_s": [],
        "python_torch_s": [],
        "server_imports_s": [],
        "health_s": [],
    }
    for _ in range(args.repeat):
        runs["container_s"].append(timed([*RUN, "--entrypoint", "true", args.image]))
        runs["python_torch_s"].append(timed([*python, "import torch"]))
        runs["server_imports_s"].append(timed([*python, "import imagenette_drift.serve.app"]))
        runs["health_s"].append(health_seconds(args.image, args.checkpoint))
    result = {
        key: {"median": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]}
        for key, v in runs.items()
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps({"image": args.image, **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()

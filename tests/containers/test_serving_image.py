"""The serving image run as Cloud Run runs it: PORT from the environment, a read-only root filesystem with a
writable /tmp only, a non-root user, 2 GiB of memory; the checkpoint from a mounted path or from gs:// (the
storage emulator on the host's loopback, reached through the host's network), SIGTERM from `podman stop`."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import SAMPLE_ROOT
from tests.containers.conftest import podman
from tests.serve._gcs import StorageEmulator
from tests.serve._server import ServeProcess, free_port
from tests.serve.test_inference_log import BUCKET, gcs_tables, local_tables, predict, rows

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGES = sorted((SAMPLE_ROOT / "val").rglob("*.JPEG"))[::8]  # 5 real images, one of each of 5 classes
# The log is written by the record count or SIGTERM's flush only, never by its timer, during a test.
LOG_FLAGS = ("--log_flush_records", "1000", "--log_flush_seconds", "600")


class ServeContainer:
    """`podman run` of the serving image with Cloud Run's constraints, on the host's loopback at `url`."""

    def __init__(
        self,
        image: str,
        model_uri: str,
        *flags: str,
        env: dict[str, str],
        volumes: list[str],
        host_network: bool,
    ) -> None:
        self.name = f"imagenette-serve-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = ["run", "-d", "--name", self.name, "--read-only", "--tmpfs", "/tmp", "--memory", "2g"]
        if host_network:
            # To reach the emulator on the host's loopback; --host keeps the server off the host's other
            # interfaces (on Cloud Run it listens on 0.0.0.0, its default, in its own network namespace).
            self.command += ["--network", "host", "-e", f"PORT={self.port}"]
            server = ["--host", "127.0.0.1"]
        else:  # its own network namespace, as on Cloud Run: 0.0.0.0:$PORT, published on the host's loopback
            self.command += ["-e", "PORT=8080", "-p", f"127.0.0.1:{self.port}:8080"]
            server = []
        self.command += ["-e", f"MODEL_URI={model_uri}", "-e", "OMP_NUM_THREADS=1"]
        self.command += [f"-e{key}={value}" for key, value in env.items()]
        self.command += [arg for volume in volumes for arg in ("-v", volume)]
        self.command += [image, *server, "--threads", "1", "--runtime", "torch", *flags]

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def wait_healthy(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip()
            if state != "true":
                raise AssertionError(f"the container exited before /health answered:\n{self.logs()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise AssertionError(f"/health did not answer 200 within {timeout} s:\n{self.logs()}")

    def stop(self) -> int:
        """`podman stop` (SIGTERM, then SIGKILL after 10 s); the container's exit code (137: it was killed)."""
        podman("stop", "--time", "10", self.name, timeout=60)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout)

    def remove(self) -> None:
        podman("rm", "--force", self.name, check=False)


@contextlib.contextmanager
def serving(
    image: str, model_uri: str, *flags: str, env=None, volumes=(), host_network=False
) -> Iterator[ServeContainer]:
    container = ServeContainer(
        image, model_uri, *flags, env=env or {}, volumes=list(volumes), host_network=host_network
    )
    podman(*container.command)
    try:
        container.wait_healthy()
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def outside_labels(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The labels that `imagenette serve` outside any container gives the test images."""
    log = tmp_path_factory.mktemp("outside") / "serve.log"
    with ServeProcess(trained_checkpoint, log, "--runtime", "torch") as server:
        return [predict(server.url, path.read_bytes()).json()["label"] for path in IMAGES]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[StorageEmulator]:
    """The storage emulator on 127.0.0.1 only, as the container sees the host's loopback (--network=host)."""
    gcs = StorageEmulator(tmp_path / "emulator.log").start()
    yield gcs
    gcs.stop()


def answer_all(url: str) -> dict[str, str]:
    """POST each test image to /predict; every answer must be 200. Returns request id -> label."""
    answers = {}
    for path in IMAGES:
        reply = predict(url, path.read_bytes())
        assert reply.status_code == 200, reply.text
        answers[reply.json()["request_id"]] = reply.json()["label"]
    return answers


def test_a_mounted_checkpoint_serves_every_route_read_only_non_root_and_flushes_on_sigterm(
    built_images: dict[str, str], trained_checkpoint: Path, outside_labels: list[str], tmp_path: Path
) -> None:
    log = tmp_path / "log"
    log.mkdir(mode=0o777)
    log.chmod(0o777)  # the image's user (10001) writes here; the umask would take the group and others' bits
    volumes = [f"{trained_checkpoint.parent}:/models:ro", f"{log}:/log"]
    with serving(
        built_images["serve"], "/models/last.ckpt", "--log", "/log", *LOG_FLAGS, volumes=volumes
    ) as container:
        assert podman("exec", container.name, "id", "-u").stdout.strip() == "10001"
        refused = podman("exec", container.name, "touch", "/app/written", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        assert podman("exec", container.name, "touch", "/tmp/written").returncode == 0

        info = requests.get(f"{container.url}/info", timeout=10)
        assert info.status_code == 200 and info.json()
        answers = answer_all(container.url)
        assert list(answers.values()) == outside_labels
        drift = requests.get(f"{container.url}/drift", timeout=10)
        assert drift.status_code == 200 and drift.json()["images_seen"] == len(IMAGES)
        metrics = requests.get(f"{container.url}/metrics", timeout=10)
        assert metrics.status_code == 200 and "imagenette_" in metrics.text

        assert container.stop() == 0  # ended by SIGTERM within podman's 10 s, not SIGKILLed (137)
    records = rows(local_tables(log, "predictions"))
    assert sorted(record["request_id"] for record in records) == sorted(answers)


def test_a_gs_checkpoint_from_the_storage_emulator_logs_to_gs_and_flushes_on_sigterm(
    built_images: dict[str, str],
    trained_checkpoint: Path,
    outside_labels: list[str],
    emulator: StorageEmulator,
) -> None:
    emulator.upload(BUCKET, "models/last.ckpt", trained_checkpoint)
    env = {"STORAGE_EMULATOR_HOST": emulator.host}
    with serving(
        built_images["serve"],
        f"gs://{BUCKET}/models/last.ckpt",
        "--log",
        f"gs://{BUCKET}/log",
        *LOG_FLAGS,
        env=env,
        host_network=True,
    ) as container:
        answers = answer_all(container.url)
        assert list(answers.values()) == outside_labels
        assert container.stop() == 0
    records = rows(gcs_tables(emulator.client(), "log", "predictions"))
    assert sorted(record["request_id"] for record in records) == sorted(answers)

"""The retraining loop end to end on this machine, on the shipped sample, in a few minutes (`make loop-demo`).

Usage: python scripts/loop_demo.py [--workdir outputs/loop-demo] [--corruption gaussian_noise --severity 5]

Every step is the real command in its own process: train model A (configs/quickstart.yaml), register it as
the champion, serve it with an inference log that keeps images and a token-protected /feedback, send a
corrupted stream with feedback labels, run `imagenette monitor` until it alerts (the alert goes out as GitHub's
`repository_dispatch` to a local HTTP server that records it), `imagenette export-labelled`, fine-tune model B
from A on the sample plus the labelled logged images, register B, `imagenette gate` it against A on the test
set and on a production window the server logged after the export, and if it passed promote B and restart
the server on it. Each step prints its decision; the gate's decision is its own (exit code), never forced.
Outputs in --workdir: decisions.json, gate.md/gate.json, the log, the monitor's folder, the registry, both runs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "imagenette2-160"
CONFIG = REPO / "configs" / "quickstart.yaml"
GITHUB_REPO = "demo/imagenette-drift"
MARKER = ".loop-demo"  # marks a workdir the demo may empty on its next run
MONITOR_WINDOW = 20  # records per monitor window: the quickstart's drift window


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DispatchRecorder:
    """A local stand-in for api.github.com: records each `POST /repos/{owner}/{repo}/dispatches`, answers 204.

    It keeps the path, event type, payload and whether the bearer token matched, never the token itself.
    """

    def __init__(self, token: str, record: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self.record = record
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                event = {
                    "path": self.path,
                    "authorized": self.headers.get("Authorization") == f"Bearer {token}",
                    "event_type": body.get("event_type"),
                    "client_payload": body.get("client_payload"),
                }
                recorder.events.append(event)
                with recorder.record.open("a") as f:
                    f.write(json.dumps(event, default=str) + "\n")
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Demo:
    """The loop's steps; `run` calls them in order and writes decisions.json."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.workdir.resolve()
        self.log = self.work / "log"
        self.registry = self.work / "registry"
        self.decisions: dict[str, Any] = {}
        self.server: subprocess.Popen | None = None
        self.server_url = ""
        self.feedback_token = secrets.token_urlsafe(24)
        self.github_token = secrets.token_urlsafe(24)
        threads = str(args.threads)
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        }
        self.env.pop("GITHUB_TOKEN", None)
        self.env.pop("IMAGENETTE_FEEDBACK_TOKEN", None)
        self.step_no = 0
        self.started = time.monotonic()

    # -- printing and processes ------------------------------------------------------------------------
    def say(self, step: str, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {step:<16} {text}", flush=True)

    def imagenette(self, *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                   check: bool = True, name: str = "") -> subprocess.CompletedProcess:  # fmt: skip
        """Run `imagenette ARGV` (this checkout's) and keep its output in workdir/logs/NAME.log."""
        command = [sys.executable, "-m", "imagenette_drift", *argv]
        done = subprocess.run(
            command, cwd=cwd or self.work, env=env or self.env, capture_output=True, text=True
        )
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        (logs / f"{name or argv[0]}.log").write_text(
            f"$ imagenette {' '.join(argv)}\n{done.stdout}{done.stderr}"
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"`imagenette {' '.join(argv)}` exited {done.returncode}:\n{done.stderr[-3000:]}"
            )
        return done

    def start_server(self, checkpoint: Path, name: str) -> None:
        port = _free_port()
        self.server_url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "imagenette_drift", "serve", "--ckpt_path", str(checkpoint),
            "--host", "127.0.0.1", "--port", str(port), "--threads", str(self.args.threads), "--runtime", "torch",
            "--log", str(self.log), "--log_images", "--log_flush_records", str(MONITOR_WINDOW),
            "--log_flush_seconds", "1", "--cache_dir", str(self.work / "cache"), "--log_level", "warning",
        ]  # fmt: skip
        (self.work / "logs").mkdir(exist_ok=True)
        out = (self.work / "logs" / f"serve-{name}.log").open("w")
        env = {**self.env, "IMAGENETTE_FEEDBACK_TOKEN": self.feedback_token}  # never a flag: `ps` shows flags
        self.server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"the server exited {self.server.returncode}; see {out.name}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.server_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"the server did not become healthy in 180 s; see {out.name}")

    def stop_server(self) -> None:
        """SIGTERM to the server's process group (it flushes the log), SIGKILL if it lingers."""
        if self.server is None:
            return
        if self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)
        self.server = None

    # -- traffic --------------------------------------------------------------------------------------
    def send(self, paths: list[Path], label: bool) -> dict[str, int]:
        """POST each image, corrupted, to /predict; with `label`, POST its true class to /feedback."""
        from imagenette_drift.corruptions import corrupt

        counts = {"answered": 0, "labelled": 0}
        headers = {"Authorization": f"Bearer {self.feedback_token}"}
        for i, path in enumerate(paths):
            with Image.open(path) as image:
                array = corrupt(image, self.args.corruption, self.args.severity, seed=i)
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG", quality=90)
            answer = requests.post(
                f"{self.server_url}/predict",
                files={"file": ("x.jpg", buffer.getvalue(), "image/jpeg")},
                timeout=60,
            )
            answer.raise_for_status()
            counts["answered"] += 1
            if label:
                body = {"request_id": answer.json()["request_id"], "label": path.parent.name}
                posted = requests.post(f"{self.server_url}/feedback", json=body, headers=headers, timeout=30)
                counts["labelled"] += posted.status_code == 202
        return counts

    def wait_logged(self, n: int, timeout: float = 60) -> int:
        """Wait until the log holds `n` prediction records (the server flushes every second)."""
        import pyarrow.parquet as pq

        deadline = time.monotonic() + timeout
        found = 0
        while time.monotonic() < deadline:
            files = [p for p in (self.log / "predictions").rglob("*.parquet") if not p.name.startswith(".")]
            found = sum(pq.read_metadata(p).num_rows for p in files)
            if found >= n:
                break
            time.sleep(0.5)
        return found

    # -- the loop -------------------------------------------------------------------------------------
    def run(self) -> int:
        if self.work.exists() and any(self.work.iterdir()):
            if not (self.work / MARKER).is_file():
                raise SystemExit(
                    f"--workdir {self.work} holds files this demo did not write; pass an empty or new folder."
                )
            shutil.rmtree(self.work)  # an earlier demo's outputs
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / MARKER).write_text("outputs of scripts/loop_demo.py; emptied by the next run\n")
        recorder = DispatchRecorder(self.github_token, self.work / "dispatches.jsonl")
        try:
            code = self._loop(recorder)
        finally:
            self.stop_server()
            recorder.close()
            self.decisions["wall_s"] = round(time.monotonic() - self.started, 1)
            (self.work / "decisions.json").write_text(json.dumps(self.decisions, indent=2) + "\n")
        self.print_summary()
        return code

    def print_summary(self) -> None:
        """The loop's decisions, one line each."""
        d = self.decisions
        alert = d.get("alert")
        lines = [
            "monitor: no alert, nothing retrained"
            if alert is None
            else f"monitor: alert raised on window {alert['window']} -> repository_dispatch 'retrain'"
        ]
        if "export" in d:
            lines.append(f"export-labelled: {d['export']['exported']} labelled logged images for retraining")
        if "gate" in d:
            lines.append(
                f"gate: {'PASS' if d['gate']['passed'] else 'REFUSED'} (exit {d['gate']['exit_code']})"
            )
        if "release" in d:
            release = d["release"]
            lines.append(
                f"release: {'B promoted, now serving' if release['promoted'] else 'kept A, serving'} "
                f"{release['serving']}"
            )
        print(
            f"\nloop finished in {d['wall_s']:.0f} s:", *(f"  {line}" for line in lines), sep="\n", flush=True
        )

    def _loop(self, recorder: DispatchRecorder) -> int:
        train = sorted((SAMPLE / "train").rglob("*.JPEG"))
        test = sorted((SAMPLE / "val").rglob("*.JPEG"))
        a_ckpt = self.train("A", self.work / "run-a", SAMPLE, self.args.epochs_a)
        version_a = self.register("A", a_ckpt)
        self.imagenette(
            *self.registry_args, "promote", version_a, "--expect_champion", "none", name="promote-a"
        )
        self.say("register A", f"version {version_a} -> champion (the first model: nothing to gate against)")
        served_a = self.registry / version_a / "model.ckpt"
        self.serve("A", served_a)
        self.stream(train)
        payload = self.await_alert(recorder, served_a)
        if payload is None:
            return 1
        data_b = self.export(payload["log"])
        # Production goes on while B trains: these requests form the window the gate judges B on.
        counts = self.send(test, label=True)
        self.wait_logged(len(train) + counts["answered"])
        self.say("traffic", f"{counts['answered']} more images (the sample's test images, {self.args.corruption}) "
                 f"served by A after the export, {counts['labelled']} labelled: the gate's production window")  # fmt: skip
        b_ckpt = self.train("B", self.work / "run-b", data_b, self.args.epochs_b, resume=a_ckpt)
        version_b = self.register("B", b_ckpt)
        self.say("register B", f"version {version_b} (candidate)")
        if self.gate(version_b, len(test)):
            return self.release(version_a, version_b, test[:5])
        self.say("release", f"B refused: the server stays on A ({version_a}); B stays a registered candidate")
        self.decisions["release"] = {"serving": version_a, "promoted": False}
        return 0

    # -- the steps --------------------------------------------------------------------------------------
    @property
    def registry_args(self) -> list[str]:
        return ["registry", "--registry", str(self.registry)]

    def train(self, name: str, run_dir: Path, root: Path, epochs: int, resume: Path | None = None) -> Path:
        """Quickstart fit of model `name` (resumed from `resume` for `epochs` more); its last.ckpt."""
        run_dir.mkdir()
        started = time.monotonic()
        total = epochs + (self.args.epochs_a if resume else 0)
        extra = [f"--ckpt_path={resume}"] if resume else []
        self.imagenette("fit", "--config", str(CONFIG), f"--data.root={root}", f"--trainer.max_epochs={total}",
                        *extra, cwd=run_dir, name=f"fit-{name.lower()}")  # fmt: skip
        out = run_dir / "outputs" / "quickstart"
        acc = json.loads((out / "val_metrics.json").read_text())["val/acc"]
        how = f"resumed A for {epochs} more epochs" if resume else f"quickstart, {epochs} epochs"
        self.say(f"{'retrain' if resume else 'train'} {name}", f"{how} on {root.name}: held-out acc {acc:.1%} "
                 f"({time.monotonic() - started:.0f} s)")  # fmt: skip
        self.decisions[f"model_{name.lower()}"] = {"checkpoint": str(out / "checkpoints" / "last.ckpt"),
                                                   "heldout_acc": acc}  # fmt: skip
        return out / "checkpoints" / "last.ckpt"

    def register(self, name: str, checkpoint: Path) -> str:
        """`imagenette registry register`; the version (sha12)."""
        out = self.imagenette(*self.registry_args, "register", "--ckpt_path", str(checkpoint), "--repo", str(REPO),
                              name=f"register-{name.lower()}").stdout  # fmt: skip
        version = out.split()[-3]  # "[already ]registered VERSION at URI"
        self.decisions[f"model_{name.lower()}"]["version"] = version
        return version

    def serve(self, name: str, checkpoint: Path) -> None:
        started = time.monotonic()
        self.start_server(checkpoint, name.lower())
        self.say(f"serve {name}", f"{self.server_url}: inference log with images in {self.log}, /feedback behind a "
                 f"token ({time.monotonic() - started:.0f} s to healthy)")  # fmt: skip

    def stream(self, paths: list[Path]) -> None:
        """The corrupted stream with feedback labels; an unauthenticated label is refused."""
        started = time.monotonic()
        counts = self.send(paths, label=True)
        anonymous = requests.post(
            f"{self.server_url}/feedback", json={"request_id": "x", "label": "tench"}, timeout=30
        )
        logged = self.wait_logged(counts["answered"])
        self.say("traffic", f"{counts['answered']} images with {self.args.corruption} (severity {self.args.severity}) "
                 f"answered, {counts['labelled']} labels accepted with the token, a label without it refused "
                 f"(HTTP {anonymous.status_code}); {logged} records logged ({time.monotonic() - started:.0f} s)")  # fmt: skip
        self.decisions["traffic"] = counts | {"unauthenticated_feedback_status": anonymous.status_code}

    def await_alert(self, recorder: DispatchRecorder, checkpoint: Path) -> dict[str, Any] | None:
        """Run `imagenette monitor` until its alert reaches the recorder; the dispatch's payload (None: no alert)."""
        env = {**self.env, "GITHUB_TOKEN": self.github_token, "GITHUB_API_URL": recorder.url}
        monitor = ["monitor", "--log", str(self.log), "--ckpt_path", str(checkpoint), "--window", str(MONITOR_WINDOW),
                   "--alert_k", "2", "--clear_k", "2", "--out", str(self.work / "monitor"),
                   "--github_repo", GITHUB_REPO, "--threads", str(self.args.threads)]  # fmt: skip
        for attempt in range(1, self.args.monitor_runs + 1):
            summary = (
                self.imagenette(*monitor, env=env, name=f"monitor-{attempt}").stdout.strip().splitlines()[-1]
            )
            if recorder.events:
                break
            time.sleep(2)
        if not recorder.events:
            self.say("monitor", f"no alert after {attempt} runs ({summary}): nothing to retrain; stop.")
            self.decisions["alert"] = None
            return None
        event = recorder.events[0]
        payload = event["client_payload"]
        self.say("monitor", f"run {attempt}: {summary}")
        self.say("alert", f"RAISED on window {payload['window']} -> repository_dispatch '{event['event_type']}' "
                 f"received by the local recorder (token {'ok' if event['authorized'] else 'WRONG'}), "
                 f"log {payload['log']}")  # fmt: skip
        self.decisions["alert"] = {"window": payload["window"], "event_type": event["event_type"],
                                   "log": payload["log"], "authorized": event["authorized"]}  # fmt: skip
        return payload

    def export(self, log: str) -> Path:
        """`imagenette export-labelled` of the log the alert names, merged with the sample: B's training set."""
        data = self.work / "data-b"
        self.imagenette("export-labelled", "--log", log, "--output", str(data), "--base", str(SAMPLE),
                        name="export-labelled")  # fmt: skip
        export = json.loads((data / "export.json").read_text())
        self.say("export-labelled", f"{export['exported']} labelled logged images + "
                 f"{sum(export['base_per_class'].values())} sample images -> {data}; skipped "
                 f"{export['skipped_unlabelled']} unlabelled, {export['skipped_imageless']} without an image")  # fmt: skip
        keys = ("exported", "per_class", "skipped_unlabelled", "skipped_imageless", "orphan_labels")
        self.decisions["export"] = {k: export[k] for k in keys}
        return data

    def gate(self, candidate: str, window: int) -> bool:
        """`imagenette gate` against the champion on the test set and the log's last `window` records (less any
        that B trained on: none, as they were served after the export)."""
        args = self.args
        gate = self.imagenette("gate", "--registry", str(self.registry), "--candidate", candidate,
                               "--champion", "champion", f"--data.root={SAMPLE}", "--log", str(self.log),
                               "--window", str(window), "--exclude_trained", str(self.work / "data-b"), "--tolerance", str(args.tolerance),
                               "--window_tolerance", str(args.window_tolerance), "--output", str(self.work / "gate.md"),
                               "--output", str(self.work / "gate.json"), "--threads", str(args.threads),
                               check=False, name="gate")  # fmt: skip
        if gate.returncode not in (0, 1):
            raise RuntimeError(f"imagenette gate failed ({gate.returncode}):\n{gate.stderr[-3000:]}")
        decision = json.loads((self.work / "gate.json").read_text())
        self.say("gate", f"{'PASS' if gate.returncode == 0 else 'REFUSED'}: {decision['reason']}")
        print(gate.stdout, flush=True)
        self.decisions["gate"] = {"passed": decision["passed"], "exit_code": gate.returncode,
                                  "reason": decision["reason"]}  # fmt: skip
        return gate.returncode == 0

    def release(self, version_a: str, version_b: str, check: list[Path]) -> int:
        """Promote B (only if A is still the champion), restart the server on it, and check that B answers."""
        self.imagenette(
            *self.registry_args, "promote", version_b, "--expect_champion", version_a, name="promote-b"
        )
        self.stop_server()
        started = time.monotonic()
        self.start_server(self.registry / version_b / "model.ckpt", "b")
        info = requests.get(f"{self.server_url}/info", timeout=10).json()
        counts = self.send(check, label=False)
        ok = info["checkpoint"]["sha256"].startswith(version_b)
        self.say("release", f"B promoted to champion; server restarted on B ({time.monotonic() - started:.0f} s), "
                 f"/info {'names' if ok else 'does NOT name'} {version_b}; {counts['answered']} requests answered "
                 "by B")  # fmt: skip
        self.decisions["release"] = {"serving": version_b, "promoted": True, "info_names_b": ok}
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path("outputs/loop-demo"), help="emptied, then filled"
    )
    parser.add_argument("--corruption", default="gaussian_noise", help="ImageNet-C corruption of the stream")
    parser.add_argument("--severity", type=int, default=5, help="its severity, 1-5")
    parser.add_argument("--epochs-a", type=int, default=3, help="epochs of model A (the quickstart's)")
    parser.add_argument("--epochs-b", type=int, default=2, help="more epochs for B, resumed from A")
    parser.add_argument("--tolerance", type=float, default=0.005, help="the gate's test-set tolerance")
    parser.add_argument(
        "--window-tolerance", type=float, default=0.02, help="the gate's production-window tolerance"
    )
    parser.add_argument(
        "--monitor-runs", type=int, default=5, help="monitor runs before giving up on an alert"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads of every process")
    args = parser.parse_args(argv)
    print(f"loop demo in {args.workdir} (threads per process: {args.threads})", flush=True)
    code = Demo(args).run()
    print(f"decisions: {args.workdir / 'decisions.json'}", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

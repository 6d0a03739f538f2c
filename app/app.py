"""Gradio demo of imagenette-drift: classify an image and show the server's drift monitor.

Hugging Face Spaces runs this file (`app_file`); locally: `python app/app.py` or `make app`. Settings come
from the environment, or from the same-named flags (`--help`):

- ``API_URL``: the `imagenette serve` server to call (default http://127.0.0.1:8000).
- ``APP_CHECKPOINT``: a `.ckpt` to run in this process instead (no server; needs torch and imagenette-drift).
- ``API_TIMEOUT``: seconds per API attempt (default 30); a timed-out request is retried once.
- ``MONITOR_URL``: an `imagenette monitor --follow` service whose window table the Monitoring tab shows
  (default http://127.0.0.1:8010).
- ``PORT`` or ``GRADIO_SERVER_PORT``: the app's port (default 7860); ``GRADIO_SERVER_NAME``: its host.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no analytics, no version check

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import display
import gradio as gr
from backend import Backend, BackendError

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_MONITOR_URL = "http://127.0.0.1:8010"
MAX_SIMULATED = 500  # images one "simulate drift" click may send

log = logging.getLogger("imagenette_app")


@dataclass(frozen=True)
class AppConfig:
    """Where predictions come from and where the app listens.

    Attributes:
        api_url: Root URL of the REST server (API mode).
        checkpoint: A checkpoint to run in-process instead; overrides `api_url`.
        timeout: Seconds per API attempt.
        host: Interface to listen on; None lets gradio decide (``GRADIO_SERVER_NAME``, else 127.0.0.1).
        port: Port to listen on.
        monitor_url: Root URL of an `imagenette monitor --follow` service (the Monitoring tab).
    """

    api_url: str = DEFAULT_API_URL
    checkpoint: Path | None = None
    timeout: float = 30.0
    host: str | None = None
    port: int = 7860
    monitor_url: str = DEFAULT_MONITOR_URL


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Flags whose defaults come from the environment variables the Space sets."""
    parser = argparse.ArgumentParser(
        prog="app.py", description="Gradio demo: predictions and drift status from imagenette-drift."
    )
    parser.add_argument(
        "--api-url",
        default=environ.get("API_URL", DEFAULT_API_URL),
        help="the `imagenette serve` root URL (env API_URL; default %(default)s)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=environ.get("APP_CHECKPOINT") or None,
        help="run this checkpoint in-process instead of calling the API (env APP_CHECKPOINT)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=environ.get("API_TIMEOUT", "30"),
        help="seconds per API attempt; one retry follows a timeout (env API_TIMEOUT; default %(default)s)",
    )
    parser.add_argument(
        "--host", default=environ.get("GRADIO_SERVER_NAME"), help="interface (env GRADIO_SERVER_NAME)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=environ.get("PORT") or environ.get("GRADIO_SERVER_PORT") or "7860",
        help="port (env PORT or GRADIO_SERVER_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--monitor-url",
        default=environ.get("MONITOR_URL", DEFAULT_MONITOR_URL),
        help="`imagenette monitor --follow` root URL for the Monitoring tab (env MONITOR_URL; default %(default)s)",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> AppConfig:
    """Settings from flags, falling back to the environment."""
    args = build_parser(environ).parse_args(argv)
    return AppConfig(args.api_url, args.checkpoint, args.timeout, args.host, args.port, args.monitor_url)


def create_backend(config: AppConfig) -> Backend:
    """The in-process model when a checkpoint is given (imports torch), else the REST client (does not)."""
    if config.checkpoint is not None:
        from local_model import LocalModel

        return LocalModel(config.checkpoint)
    from api_client import ApiClient

    return ApiClient(config.api_url, timeout=config.timeout)


def list_examples(folder: Path = EXAMPLES_DIR) -> tuple[list[list[str]], list[str]]:
    """Example rows (one image path each) and their captions: clean images first, then corrupted ones."""
    paths = sorted(folder.glob("*.jpg"), key=lambda p: (is_corrupted(p), p.stem))
    return [[str(p)] for p in paths], [_caption(p.stem) for p in paths]


def is_corrupted(example: Path) -> bool:
    """Corrupted examples are named ``<class>-<corruption>-<severity>.jpg``."""
    return "-" in example.stem


def _caption(stem: str) -> str:
    """``tench-gaussian_noise-5`` -> ``tench + gaussian noise 5``."""
    name, _, corruption = stem.replace("_", " ").partition("-")
    return f"{name} + {corruption.replace('-', ' ')}" if corruption else name


class Handlers:
    """The page's event handlers: every failure becomes a message on the page, never a traceback."""

    def __init__(
        self, backend: Backend, corrupted: Sequence[Path] = (), monitor_url: str = DEFAULT_MONITOR_URL
    ) -> None:
        self.backend = backend
        self.corrupted = list(corrupted)
        self.monitor_url = monitor_url  # set by the operator (MONITOR_URL), never by a visitor of the page

    def monitor(self) -> str:
        """The monitoring tab's HTML: the monitor's window table, or why it is unavailable."""
        from api_client import ApiClient

        try:
            return display.monitor_table(ApiClient(self.monitor_url, timeout=30.0).monitor_status())
        except ValueError as e:  # a URL that is not http(s)
            return display.monitor_unavailable(BackendError("Bad monitor URL", str(e)))
        except BackendError as e:
            return display.monitor_unavailable(e)
        except Exception:
            log.exception("fetching the monitor status failed")
            return display.monitor_unavailable(BackendError("Monitor status unavailable", "app error"))

    def classify(self, image_path: str | None) -> tuple:
        """(top-5 label, latency line, drift badge, message, familiarity line) for one image."""
        if not image_path:
            return None, "", gr.skip(), "Upload, paste or drag an image first, or pick an example.", ""
        try:
            prediction = self.backend.predict(image_path)
        except BackendError as e:
            return None, "", gr.skip(), display.error_message(e), ""
        except Exception:  # a bug of ours: log it for the operator, show the user a plain sentence
            log.exception("classifying %s failed", image_path)
            return None, "", gr.skip(), "**Something went wrong in the app.** The error was logged.", ""
        return (
            display.label_value(prediction),
            display.latency_text(prediction),
            self.drift_badge(),
            "",
            display.familiarity_text(prediction),
        )

    def simulate_drift(self, progress: gr.Progress = gr.Progress()) -> tuple[str, str]:  # noqa: B008
        """(drift badge, message) after sending one window's worth of the corrupted examples."""
        try:
            state = self.backend.drift()
            if not state.enabled or not state.window_size:
                return display.drift_badge(state), "Nothing to simulate: drift monitoring is off."
            if not self.corrupted:
                return display.drift_badge(
                    state
                ), f"No corrupted examples (`*-*.jpg`) in {EXAMPLES_DIR.name}/."
            count = min(state.window_size, MAX_SIMULATED)
            for i in progress.tqdm(range(count), desc="Sending corrupted images"):
                self.backend.predict(self.corrupted[i % len(self.corrupted)])
        except BackendError as e:
            return self.drift_badge(), display.error_message(e)
        return self.drift_badge(), f"Sent {count} corrupted example images, a full drift window."

    def drift_badge(self) -> str:
        """The drift badge, or a grey one saying why the status is unavailable."""
        try:
            return display.drift_badge(self.backend.drift())
        except BackendError as e:
            return display.drift_unavailable_badge(e)
        except Exception:
            log.exception("fetching the drift status failed")
            return display.drift_unavailable_badge(BackendError("Drift status unavailable", "app error"))


def build_demo(
    backend: Backend, examples_dir: Path = EXAMPLES_DIR, monitor_url: str = DEFAULT_MONITOR_URL
) -> gr.Blocks:
    """The page: image in; top-5 label, latency, familiarity, drift badge and messages out; a Monitoring tab
    with the fleet monitor's window table."""
    rows, captions = list_examples(examples_dir)
    corrupted = [Path(p) for (p,) in rows if is_corrupted(Path(p))]
    handlers = Handlers(backend, corrupted=corrupted, monitor_url=monitor_url)
    with gr.Blocks(title="Imagenette drift demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Imagenette classifier with drift monitoring\n"
            "Upload, paste or drag an image of one of the ten Imagenette classes (or pick an example) and "
            "press **Classify**. The badge shows whether the images the model has seen lately drift away "
            f"from its training data. Predictions come from the {backend.description}."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type="filepath", sources=["upload", "clipboard"], label="Image", elem_id="input-image"
                )
                submit = gr.Button("Classify", variant="primary", elem_id="submit")
            with gr.Column():
                label = gr.Label(num_top_classes=5, label="Top-5 classes", elem_id="prediction")
                latency = gr.Markdown(elem_id="latency")
                familiarity = gr.Markdown(elem_id="familiarity")
                badge = gr.HTML(display.drift_badge_pending(), elem_id="drift-badge")
                message = gr.Markdown(elem_id="message")
                with gr.Row():
                    refresh = gr.Button("Refresh drift status", size="sm", elem_id="refresh-drift")
                    simulate = gr.Button(
                        "Send a window of corrupted examples",
                        size="sm",
                        elem_id="simulate-drift",
                    )
        outputs = [label, latency, badge, message, familiarity]
        # Named endpoints first: the examples' own event would otherwise take the name "classify".
        submit.click(handlers.classify, inputs=image, outputs=outputs, api_name="classify")
        refresh.click(handlers.drift_badge, outputs=badge, api_name="drift")
        simulate.click(handlers.simulate_drift, outputs=[badge, message], api_name="simulate_drift")
        demo.load(handlers.drift_badge, outputs=badge, api_visibility="private")
        if rows:
            gr.Examples(
                rows,
                inputs=[image],
                outputs=outputs,
                fn=handlers.classify,
                run_on_click=True,
                cache_examples=False,
                example_labels=captions,
                examples_per_page=len(rows),
                label="Examples: real Imagenette images, then corrupted copies (one button sends a drift window of those)",
            )
        # The fleet's view (`imagenette monitor --follow`), beside this server's own badge above.
        with gr.Tab("Fleet monitoring", id="monitoring"):
            gr.Markdown(
                "The fleet's traffic, window by window, as `imagenette monitor --follow` sees it in the inference "
                "log of every replica. Drifting windows are marked red."
            )
            load = gr.Button("Load windows", size="sm", elem_id="load-monitor")
            table = gr.HTML(elem_id="monitor-table")
            load.click(handlers.monitor, outputs=table, api_name="monitor")
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """Read the settings, build the backend, and serve the page (no share link, nothing fetched)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    try:
        backend = create_backend(config)
    except (ValueError, FileNotFoundError) as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    log.info("serving predictions from %s", config.checkpoint or config.api_url)
    build_demo(backend, monitor_url=config.monitor_url).launch(
        server_name=config.host,
        server_port=config.port,
        share=False,
        allowed_paths=[str(EXAMPLES_DIR)],
        css=display.BADGE_CSS,
    )


if __name__ == "__main__":
    main()

"""`imagenette serve`: serve a checkpoint (local path or gs:// URI) over REST with LitServe."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from imagenette_drift.commands._options import add_checkpoint_option

HOSTS = ("0.0.0.0", "127.0.0.1", "::")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def default_cache_dir() -> Path:
    """`$IMAGENETTE_CACHE`, else `$XDG_CACHE_HOME/imagenette-drift`, else `~/.cache/imagenette-drift`."""
    if os.environ.get("IMAGENETTE_CACHE"):
        return Path(os.environ["IMAGENETTE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagenette-drift"


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


# Cloud Run sends SIGKILL 10 s after SIGTERM: the final flush of the inference log must end before that.
LOG_CLOSE_TIMEOUT_S = 8.0


def _on_sigterm(main_pid: int, on_child_exit: Callable[[], object] | None = None):
    """SIGTERM handler: LitServe's graceful shutdown in the main process; in forked children (the API server),
    `on_child_exit` (the inference log's final flush), then a quiet exit. A repeated signal waits for the first.
    """
    exiting = False

    def handler(signum: int, frame: object) -> None:
        nonlocal exiting
        if os.getpid() == main_pid:
            raise KeyboardInterrupt
        if exiting:
            return
        exiting = True
        if on_child_exit is not None:
            on_child_exit()
        raise SystemExit(0)

    return handler


def _make_cache_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"--cache-dir {path} cannot be created as a folder ({e.strerror}); pass another one."
        ) from e


def check_port_free(host: str, port: int) -> None:
    """Bind `host:port` as the server will (SO_REUSEADDR, as uvicorn does) and let go; UserError when taken."""
    from imagenette_drift.errors import UserError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(
                f"port {port} on {host} is not free ({e.strerror}): another server holds it. Pass a free one "
                "with --port N (or set $PORT), or stop the process that listens there."
            ) from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagenette serve",
        description="Serve a checkpoint over REST: POST /predict, GET /health, /info, /drift, /metrics.",
        allow_abbrev=False,
    )
    add_checkpoint_option(
        parser,
        "a .ckpt path or gs://BUCKET/OBJECT (default: $MODEL_URI)",
        default=os.environ.get("MODEL_URI"),
        required=not os.environ.get("MODEL_URI"),
    )
    parser.add_argument("--host", default="0.0.0.0", choices=HOSTS, help="interface to listen on")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", 8000)), help="port (default: $PORT, else 8000)"
    )
    parser.add_argument("--workers", type=_positive_int, default=1, help="inference worker processes")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch/ONNX threads per worker (default: cores // workers, so workers x threads <= cores)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=8,
        help="dynamic batching: most requests per forward pass",
    )
    parser.add_argument(
        "--batch-timeout", type=float, default=0.005, help="seconds to wait for a batch to fill"
    )
    parser.add_argument(
        "--runtime",
        choices=("auto", "torch", "bf16", "onnx", "cuda"),
        default="auto",
        help="inference backend: auto (default: cuda when a GPU is visible, else bf16 on CPUs with native "
        "bfloat16 (amx_bf16/avx512_bf16), else onnx; /info says which), torch (fp32), bf16 (torch in "
        "bfloat16, probabilities within ~1e-2 of fp32), onnx (ONNX Runtime, fp32), cuda (torch fp32 on the GPU)",
    )
    parser.add_argument(
        "--no-tta",
        action="store_true",
        help="one forward pass per image even when the checkpoint was evaluated with a mirrored second pass "
        "(tta_flip): half the compute, the accuracy of the model without test-time flips",
    )
    parser.add_argument(
        "--max-bytes", type=_positive_int, default=10_000_000, help="largest request body (413 above)"
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=40_000_000,
        help="largest width x height of an image (413 above)",
    )
    parser.add_argument(
        "--expected-sha256", default=None, help="refuse to serve a checkpoint whose sha256 differs from this"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="downloaded gs:// checkpoints and exported ONNX models (default: $IMAGENETTE_CACHE or ~/.cache/imagenette-drift)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait before a 504")
    parser.add_argument(
        "--log",
        default=os.environ.get("IMAGENETTE_LOG"),
        help="inference log: write one record per served image under this folder or gs://BUCKET[/PREFIX] "
        "(default: $IMAGENETTE_LOG; none: log nothing)",
    )
    parser.add_argument(
        "--log-images",
        action="store_true",
        help="also store each request's original image bytes in the log (personal data: off by default)",
    )
    parser.add_argument(
        "--log-flush-records", type=_positive_int, default=1000, help="write a log file every N records"
    )
    parser.add_argument(
        "--log-flush-seconds",
        type=_positive_float,
        default=30.0,
        help="... or once its oldest record is this old (and always on SIGTERM)",
    )
    parser.add_argument(
        "--log-spill-dir",
        type=Path,
        default=None,
        help="local folder for log files the sink refused, retried later (default: CACHE_DIR/inference-log-spill)",
    )
    parser.add_argument(
        "--feedback-token",
        default=os.environ.get("IMAGENETTE_FEEDBACK_TOKEN"),
        help="bearer token that POST /feedback requires (prefer $IMAGENETTE_FEEDBACK_TOKEN: a flag shows in "
        "`ps` and shell history); without one /feedback is off",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log verbosity",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 1024 <= args.port <= 65535:
        parser.error(f"--port must be between 1024 and 65535, got {args.port}")
    if args.batch_timeout < 0:
        parser.error(f"--batch-timeout must be >= 0, got {args.batch_timeout}")
    if args.feedback_token is not None and not args.feedback_token.strip():
        parser.error("the feedback token is empty; set IMAGENETTE_FEEDBACK_TOKEN to a secret, or unset it.")
    if args.feedback_token and not args.log:
        parser.error(
            "/feedback writes labels to the inference log: pass --log PATH_OR_GS_URI with the token."
        )
    if args.log_images and not args.log:
        parser.error("--log-images needs --log PATH_OR_GS_URI.")
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.workers)
    if args.workers * threads > cores:
        logging.warning(
            "%d workers x %d threads exceeds the %d cores: workers will slow each other down; lower --threads.",
            args.workers,
            threads,
            cores,
        )
    from imagenette_drift.card import CHECKPOINT_KEY, ModelCard
    from imagenette_drift.checkpoint import read_checkpoint
    from imagenette_drift.errors import one_line
    from imagenette_drift.hashing import file_sha256
    from imagenette_drift.serve.app import ServeConfig, build_server
    from imagenette_drift.serve.litserve_adapter import WorkerStartError
    from imagenette_drift.serve.runtime import choose_runtime
    from imagenette_drift.storage.checkpoint import resolve_checkpoint

    try:
        _make_cache_dir(args.cache_dir)
        resolved = resolve_checkpoint(args.ckpt_path, args.cache_dir, expected_sha256=args.expected_sha256)
        card = ModelCard.from_dict(read_checkpoint(resolved.path)[CHECKPOINT_KEY])
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"imagenette serve: error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    check_port_free(args.host, args.port)
    if args.log:  # refuse now rather than warn at the first flush, minutes into serving
        from imagenette_drift.storage.probe import probe_writable

        probe_writable(args.log, "--log")
    if resolved.offline:
        print(
            f"imagenette serve: GCS unreachable; serving cached generation {resolved.generation} of "
            f"{resolved.source} from {resolved.path}",
            file=sys.stderr,
        )
    runtime, runtime_reason = choose_runtime(args.runtime)
    config = ServeConfig(
        checkpoint=resolved.path,
        source=resolved.source,
        workers=args.workers,
        threads=threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        runtime=runtime,
        runtime_reason=runtime_reason,
        tta=not args.no_tta,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        cache_dir=args.cache_dir,
        timeout=args.timeout,
        log=args.log,
        log_images=args.log_images,
        log_flush_records=args.log_flush_records,
        log_flush_seconds=args.log_flush_seconds,
        log_spill_dir=args.log_spill_dir,
        feedback_token=args.feedback_token,
    )
    server = build_server(config, card, file_sha256(resolved.path))
    logging.info(
        "Serving %s (%s, %d worker(s) x %d thread(s)) on %s:%d",
        resolved.source,
        f"{runtime}, {runtime_reason}",
        args.workers,
        threads,
        args.host,
        args.port,
    )
    if args.log:
        logging.info(
            "Inference log: %s%s; /feedback %s",
            args.log,
            " (with images)" if args.log_images else "",
            "on" if args.feedback_token else "off (no token)",
        )
    # docker stop / Cloud Run send SIGTERM: run LitServe's graceful shutdown; the API server flushes the log.
    writer = server.inference_log
    close_log = None if writer is None else lambda: writer.close(timeout=LOG_CLOSE_TIMEOUT_S)
    signal.signal(signal.SIGTERM, _on_sigterm(os.getpid(), close_log))
    try:
        server.run(
            host=args.host,
            port=args.port,
            num_api_servers=1,
            generate_client_file=False,
            log_level=args.log_level,
        )
    except WorkerStartError as e:  # a worker could not load the model: its traceback is logged above
        print(f"imagenette serve: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None

"""`imagenette serve`: serve a checkpoint (local path or gs:// URI) over REST with LitServe."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt

from imagenette_drift.commands._options import CommandParser


def default_cache_dir() -> Path:
    """`$IMAGENETTE_CACHE`, else `$XDG_CACHE_HOME/imagenette-drift`, else `~/.cache/imagenette-drift`."""
    if os.environ.get("IMAGENETTE_CACHE"):
        return Path(os.environ["IMAGENETTE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagenette-drift"


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
            f"--cache_dir {path} cannot be created as a folder ({e.strerror}); pass another one."
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


@dataclass
class ServeOptions:
    """Options of `imagenette serve`.

    Args:
        ckpt_path: A .ckpt path or gs://BUCKET/OBJECT (default: $MODEL_URI).
        host: Interface to listen on.
        port: Port (default: $PORT, else 8000).
        workers: Inference worker processes.
        threads: Torch/ONNX threads per worker (default: cores // workers, so workers x threads <= cores).
        max_batch_size: Dynamic batching: most requests per forward pass.
        batch_timeout: Seconds to wait for a batch to fill.
        runtime: Inference backend: auto (cuda when a GPU is visible, else bf16 on CPUs with native bfloat16
            (amx_bf16/avx512_bf16), else onnx; /info says which), torch (fp32), bf16 (torch in bfloat16,
            probabilities within ~1e-2 of fp32), onnx (ONNX Runtime, fp32), cuda (torch fp32 on the GPU).
        no_tta: One forward pass per image even when the checkpoint was evaluated with a mirrored second pass
            (tta_flip): half the compute, the accuracy of the model without test-time flips.
        max_bytes: Largest request body (413 above).
        max_pixels: Largest width x height of an image (413 above).
        expected_sha256: Refuse to serve a checkpoint whose sha256 differs from this.
        cache_dir: Downloaded gs:// checkpoints and exported ONNX models (default: $IMAGENETTE_CACHE, else
            $XDG_CACHE_HOME/imagenette-drift, else ~/.cache/imagenette-drift).
        timeout: Seconds a request may wait before a 504.
        log: Inference log: write one record per served image under this folder or gs://BUCKET[/PREFIX]
            (default: $IMAGENETTE_LOG; none: log nothing).
        log_images: Also store each request's original image bytes in the log (personal data: off by default).
        log_flush_records: Write a log file every N records ...
        log_flush_seconds: ... or once its oldest record is this old (and always on SIGTERM).
        log_spill_dir: Local folder for log files the sink refused, retried later (default:
            CACHE_DIR/inference-log-spill).
        feedback_token: Bearer token that POST /feedback requires (prefer $IMAGENETTE_FEEDBACK_TOKEN: a flag
            shows in `ps` and shell history); without one /feedback is off.
        log_level: Log verbosity.
    """

    ckpt_path: str | None = None
    host: Literal["0.0.0.0", "127.0.0.1", "::"] = "0.0.0.0"
    port: int | None = None
    workers: PositiveInt = 1
    threads: PositiveInt | None = None
    max_batch_size: PositiveInt = 8
    batch_timeout: NonNegativeFloat = 0.005
    runtime: Literal["auto", "torch", "bf16", "onnx", "cuda"] = "auto"
    no_tta: bool = False
    max_bytes: PositiveInt = 10_000_000
    max_pixels: PositiveInt = 40_000_000
    expected_sha256: str | None = None
    cache_dir: Path | None = None
    timeout: float = 30.0
    log: str | None = None
    log_images: bool = False
    log_flush_records: PositiveInt = 1000
    log_flush_seconds: PositiveFloat = 30.0
    log_spill_dir: Path | None = None
    feedback_token: str | None = field(default=None, repr=False)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"


def build_parser() -> CommandParser:
    return CommandParser(
        "imagenette serve",
        "Serve a checkpoint over REST: POST /predict, GET /health, /info, /drift, /metrics.",
        ServeOptions,
    )


def _from_environment(args: ServeOptions, parser: CommandParser) -> ServeOptions:
    """The options with the unset ones that have an environment default filled in."""
    args.ckpt_path = args.ckpt_path or os.environ.get("MODEL_URI")
    if not args.ckpt_path:
        parser.error("the following arguments are required: --ckpt_path (or set $MODEL_URI)")
    args.port = int(os.environ.get("PORT", 8000)) if args.port is None else args.port
    args.cache_dir = args.cache_dir or default_cache_dir()
    args.log = args.log or os.environ.get("IMAGENETTE_LOG")
    if args.feedback_token is None:
        args.feedback_token = os.environ.get("IMAGENETTE_FEEDBACK_TOKEN")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = _from_environment(parser.options(ServeOptions, argv), parser)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 1024 <= args.port <= 65535:
        parser.error(f"--port must be between 1024 and 65535, got {args.port}")
    if args.feedback_token is not None and not args.feedback_token.strip():
        parser.error("the feedback token is empty; set IMAGENETTE_FEEDBACK_TOKEN to a secret, or unset it.")
    if args.feedback_token and not args.log:
        parser.error(
            "/feedback writes labels to the inference log: pass --log PATH_OR_GS_URI with the token."
        )
    if args.log_images and not args.log:
        parser.error("--log_images needs --log PATH_OR_GS_URI.")
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

"""Inference backends for the server: eager torch (fp32 or bf16, CPU or CUDA) or ONNX Runtime, and `auto`.

Each maps a uint8 batch to (embeddings, probs).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.fx
from torch import nn

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.hardware import bf16_from_cpuinfo, cpu_bf16
from imagenette_drift.io import atomic_path

RuntimeName = Literal["torch", "bf16", "onnx", "cuda"]
RuntimeChoice = Literal["auto", "torch", "bf16", "onnx", "cuda"]
RUNTIMES: tuple[str, ...] = ("torch", "bf16", "onnx", "cuda")
ONNX_OPSET = 18

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """Maps a uint8 (B, 3, S, S) batch, already through the eval transform, to float32 embeddings and probs."""

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]: ...


class _Features(nn.Module):
    """`backbone.forward_features` as a module's forward, for tracing."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


def fold_batchnorm(net: nn.Module) -> tuple[nn.Module, int]:
    """A copy of an eval-mode `ImagenetteNet` with every BatchNorm that directly follows a conv folded into it.

    Eval-mode BatchNorm is an affine map, so folding it into the conv's weights and bias is exact up to float
    rounding and saves a pass over every activation (about a tenth of ResNet-18's eager CPU time). torch's
    `torch.fx.experimental.optimization.fuse` finds and folds the pairs in a trace of the backbone's
    `forward_features`, so any timm model works; the folded convs are put back in the backbone, whose other
    methods (`forward_head`, `get_classifier`) stay as they were. A backbone that cannot be traced is returned
    unchanged. Returns (the copy, the number of folded layers).
    """
    from torch.fx.experimental.optimization import fuse

    net = copy.deepcopy(net).eval()
    try:
        traced = torch.fx.symbolic_trace(_Features(net.backbone))
    except Exception as e:  # tracing is an optimisation: any failure just means no folding
        log.info("Not folding BatchNorm: %s cannot be traced (%s)", type(net.backbone).__name__, e)
        return net, 0
    # `fuse` writes the folded convs into the trace's own module tree and returns a new graph without the
    # BatchNorms; `net.backbone` itself is untouched until they are copied back here.
    fused = fuse(traced, inplace=True, no_trace=True)
    folded = _called_modules(traced) - _called_modules(fused)
    for name in _called_modules(fused):
        path = name.removeprefix("backbone.")
        if fused.get_submodule(name) is not net.backbone.get_submodule(path):
            net.backbone.set_submodule(path, fused.get_submodule(name))
    for name in folded:
        net.backbone.set_submodule(name.removeprefix("backbone."), nn.Identity())
    if getattr(net, "channels_last", False):
        net.backbone = net.backbone.to(memory_format=torch.channels_last)
    return net, len(folded)


def _called_modules(graph: torch.fx.GraphModule) -> set[str]:
    return {str(node.target) for node in graph.graph.nodes if node.op == "call_module"}


class TorchRuntime:
    """The checkpoint's network in eval mode, channels_last, BatchNorm folded, under `torch.inference_mode`.

    `bf16=True` runs it in bfloat16 as in training (weights cast once, the rest under CPU autocast): about 2x
    the fp32 speed on CPUs with native bf16 (AMX or AVX512-BF16; slower on CPUs without), with probabilities
    within about 1e-2 of fp32's. `device="cuda"` runs it in fp32 on the GPU (uint8 batches cross the bus).
    """

    def __init__(self, model: InferenceModel, bf16: bool = False, device: str = "cpu") -> None:
        net, folded = fold_batchnorm(model.net)
        log.info("Folded %d BatchNorm layers into their convolutions", folded)
        if bf16:
            # Autocast would cast every fp32 weight to bf16 on every call (about 45 MB of traffic per forward
            # for ResNet-18, 1.3 ms of a 7.5 ms batch of one here); cast them once. The result is the same.
            net.backbone = net.backbone.to(torch.bfloat16)
        self.model = InferenceModel(net.to(device), model.card, model.sha256)
        self.bf16 = bf16
        self.device = torch.device(device)

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            features, probs = self.model.embed_and_predict(images)
        return features.float().cpu().numpy(), probs.float().cpu().numpy()


class _EmbedAndPredict(nn.Module):
    """uint8 images -> (embeddings, softmax probs), the graph exported to ONNX."""

    def __init__(self, model: InferenceModel) -> None:
        super().__init__()
        self.net = model.net
        self.tta_flip = model.card.tta_flip

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = self.net.embed_and_logits(images, self.tta_flip)
        return features, logits.softmax(dim=1)


def export_onnx(model: InferenceModel, dest: Path) -> Path:
    """Export the model (uint8 NCHW input, dynamic batch) to `dest` atomically; normalisation is in the graph."""
    size = model.card.image_size
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    module = _EmbedAndPredict(model).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    with atomic_path(dest) as tmp, torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            input_names=["images"],
            output_names=["embeddings", "probs"],
            dynamic_shapes={"images": {0: batch}},
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
        program.save(str(tmp))
    return dest


class OnnxRuntime:
    """ONNX Runtime session on the exported model, cached at `<cache_dir>/onnx/<sha256>-tta<0|1>.onnx`.

    The export runs once per checkpoint (a few seconds); later starts reuse the cached file.
    """

    def __init__(self, model: InferenceModel, cache_dir: Path, threads: int) -> None:
        import onnxruntime as ort

        # The graph holds the mirrored pass or not: the export is keyed by both.
        path = Path(cache_dir) / "onnx" / f"{model.sha256}-tta{int(model.card.tta_flip)}.onnx"
        if not path.is_file():
            log.info("Exporting the model to ONNX at %s (once per checkpoint)", path)
            export_onnx(model, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: spinning threads would take the cores the HTTP process needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        features, probs = self.session.run(None, {"images": images.contiguous().numpy()})
        return features, probs


def choose_runtime(
    requested: RuntimeChoice, cuda: bool | None = None, flags: frozenset[str] | None = None
) -> tuple[RuntimeName, str]:
    """The runtime to serve with and why: `requested` itself, or for `auto` the fastest this host runs correctly.

    `auto` picks `cuda` when a GPU is visible, else `bf16` on CPUs with native bfloat16 (AMX or AVX512-BF16:
    about 1.5-2x fp32 there, but emulated and slower elsewhere), else `onnx` (ONNX Runtime fp32, faster than
    eager torch at batch 1 and equal to it at batch 8). Decided by `imagenette_drift.hardware` (the CPU's flags,
    else a measured probe), the same answer training's precision uses; `flags` overrides the CPU's flags.
    """
    if requested != "auto":
        return requested, "requested"
    if torch.cuda.is_available() if cuda is None else cuda:
        return "cuda", "auto: a CUDA device is visible"
    support = cpu_bf16() if flags is None else bf16_from_cpuinfo(flags)
    if support is not None and support.native:
        return "bf16", f"auto: {support.reason}"
    reason = support.reason if support is not None else "no native bfloat16 on this CPU"
    return "onnx", f"auto: {reason} and no CUDA device"


def create_runtime(name: RuntimeName, model: InferenceModel, cache_dir: Path, threads: int) -> Runtime:
    """Build the named backend for an already loaded model."""
    if name in ("torch", "bf16"):
        return TorchRuntime(model, bf16=name == "bf16")
    if name == "cuda":
        return TorchRuntime(model, device="cuda")
    if name == "onnx":
        return OnnxRuntime(model, cache_dir, threads)
    raise ValueError(f"Unknown runtime {name!r}; choose one of {RUNTIMES}.")

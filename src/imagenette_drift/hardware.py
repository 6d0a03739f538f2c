"""Whether this machine computes bfloat16 natively: one answer for training's precision, the optimizer and serving.

On a CPU without bfloat16 instructions every bf16 matmul and convolution is emulated: measured on an AMD Zen 3
(AVX2 only, 2 cores), a ResNet-18-D training step is 12-16x slower in bf16-mixed than in fp32 and ConvMuonSGD's
Newton-Schulz iteration 64x slower. So bf16 is chosen only where the hardware has it:

- CUDA: `torch.cuda.is_bf16_supported()` (Ampere and newer).
- x86 CPUs: the `amx_bf16` (Intel Sapphire Rapids and newer) or `avx512_bf16` (Intel Cooper Lake, AMD Zen 4 and
  newer) flag in `/proc/cpuinfo`.
- Arm CPUs: the `bf16` feature (FEAT_BF16: Neoverse V1/N2, Graviton 3) in `/proc/cpuinfo`'s `Features` line;
  on macOS `sysctl hw.optional.arm.FEAT_BF16` (Apple M2 and newer).
- Anything else (flags that say nothing): a short measured probe, bf16 against fp32 matmuls.

The answer for the CPU is computed once per process (`cpu_bf16`).
"""

from __future__ import annotations

import functools
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "NATIVE_BF16_X86_FLAGS",
    "Bf16Support",
    "bf16_from_cpuinfo",
    "cpu_bf16",
    "cpu_flags",
    "device_bf16",
    "parse_cpu_flags",
    "probe_bf16",
    "resolve_precision",
]

NATIVE_BF16_X86_FLAGS = ("amx_bf16", "avx512_bf16")
# A bf16 matmul within this factor of fp32's counts as native in the probe (emulated bf16 is 6-60x slower).
_PROBE_MAX_RATIO = 2.0


@dataclass(frozen=True)
class Bf16Support:
    """Whether bf16 arithmetic is native on a device, and why we think so (printed and stored in the card)."""

    native: bool
    reason: str


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in `/proc/cpuinfo` text: the x86 `flags` line or the Arm
    `Features` line (lower-cased); empty when neither is there."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags from `/proc/cpuinfo` (empty where there is none, e.g. macOS)."""
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def bf16_from_cpuinfo(flags: frozenset[str]) -> Bf16Support | None:
    """Decide from `/proc/cpuinfo` flags (x86 or Arm); None when they say nothing either way."""
    native = sorted(set(NATIVE_BF16_X86_FLAGS) & flags)
    if native:
        return Bf16Support(True, f"the CPU has native bfloat16 ({', '.join(native)})")
    if {"sse2", "avx", "avx2"} & flags:  # an x86 flags line without any bf16 instruction set
        return Bf16Support(False, "no native bfloat16 on this CPU (no amx_bf16/avx512_bf16 flag)")
    if "bf16" in flags:
        return Bf16Support(True, "the CPU has native bfloat16 (Arm bf16 feature)")
    if {"asimd", "fp"} & flags:  # an Arm Features line without FEAT_BF16
        return Bf16Support(False, "no native bfloat16 on this CPU (no Arm bf16 feature)")
    return None


def _macos_bf16() -> Bf16Support | None:
    if platform.system() != "Darwin":
        return None
    try:
        out = subprocess.run(
            ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if out not in ("0", "1"):
        return None
    if out == "1":
        return Bf16Support(True, "the CPU has native bfloat16 (sysctl hw.optional.arm.FEAT_BF16)")
    return Bf16Support(False, "no native bfloat16 on this CPU (sysctl hw.optional.arm.FEAT_BF16 = 0)")


def probe_bf16(size: int = 256, repeats: int = 3) -> Bf16Support:
    """Measure: bf16 counts as native when a `size`-square bf16 matmul takes at most 2x the fp32 one (the
    fastest of `repeats`; about 10-50 ms in all where bf16 is native, up to a second where it is emulated)."""
    a = torch.randn(size, size)

    def best(x: torch.Tensor) -> float:
        x @ x  # warm-up: the first call picks kernels
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x @ x
            times.append(time.perf_counter() - start)
        return min(times)

    fp32, bf16 = best(a), best(a.bfloat16())
    ratio = bf16 / max(fp32, 1e-9)
    native = ratio <= _PROBE_MAX_RATIO
    verdict = "native" if native else "emulated"
    return Bf16Support(
        native, f"measured: a bf16 matmul takes {ratio:.1f}x the fp32 one ({verdict} bfloat16)"
    )


@functools.cache
def cpu_bf16() -> Bf16Support:
    """This CPU's bfloat16 support: its flags, else macOS's sysctl, else a measured probe (cached per process)."""
    return bf16_from_cpuinfo(cpu_flags()) or _macos_bf16() or probe_bf16()


def device_bf16(device: torch.device | str) -> Bf16Support:
    """bfloat16 support on `device` (a CUDA device or the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Bf16Support(True, f"CUDA device {torch.cuda.get_device_name(device)} supports bfloat16")
        return Bf16Support(False, f"CUDA device {torch.cuda.get_device_name(device)} lacks bfloat16")
    if device.type == "cpu":
        return cpu_bf16()
    return Bf16Support(False, f"bfloat16 support on {device.type!r} devices is not checked; using fp32")


def resolve_precision(accelerator: str | None, cuda: bool | None = None) -> tuple[str, str]:
    """The Lightning `precision` for a run that left it unset, and why: `bf16-mixed` where the device the run
    trains on computes bfloat16 natively, `32-true` elsewhere.

    Args:
        accelerator: the Trainer's `accelerator` (`cpu`, `gpu`, `cuda`, `auto` or None for auto).
        cuda: whether a CUDA device is visible (None: ask torch).
    """
    wants_gpu = str(accelerator or "auto").lower() in ("auto", "gpu", "cuda")
    if wants_gpu and (torch.cuda.is_available() if cuda is None else cuda):
        support = device_bf16("cuda")
    else:
        support = cpu_bf16()
    return ("bf16-mixed" if support.native else "32-true"), support.reason

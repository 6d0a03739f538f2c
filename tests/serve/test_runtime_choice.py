"""`--runtime auto`: CUDA when visible, else bf16 on CPUs with native bfloat16, else ONNX Runtime."""

from __future__ import annotations

from imagenette_drift.serve.runtime import choose_runtime


def test_auto_picks_cuda_then_native_bf16_then_onnx() -> None:
    assert choose_runtime("auto", cuda=True, flags=frozenset({"avx512_bf16"}))[0] == "cuda"
    for flag in ("avx512_bf16", "amx_bf16"):
        name, reason = choose_runtime("auto", cuda=False, flags=frozenset({"avx2", flag}))
        assert name == "bf16" and flag in reason
    name, reason = choose_runtime("auto", cuda=False, flags=frozenset({"avx2", "avx512f"}))
    assert name == "onnx" and "no native bfloat16" in reason
    assert choose_runtime("torch", cuda=True) == ("torch", "requested")

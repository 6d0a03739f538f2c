"""Precision chosen by the hardware: native bfloat16 detection on real /proc/cpuinfo lines, ConvMuonSGD's two
Newton-Schulz paths, and the precision a real fit used on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imagenette_drift.hardware import (
    bf16_from_cpuinfo,
    cpu_bf16,
    cpu_flags,
    parse_cpu_flags,
    probe_bf16,
    resolve_precision,
)
from imagenette_drift.optim import ConvMuonSGD
from imagenette_drift.serve.runtime import choose_runtime
from tests.conftest import quickstart_args

# First processor's lines of real /proc/cpuinfo files (model name and flags/Features as the kernel prints them).
ZEN3_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl tsc_reliable nonstop_tsc cpuid extd_apicid aperfmperf pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy svm cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext invpcid_single vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves clzero xsaveerptr rdpru arat npt nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold v_vmsave_vmload umip vaes vpclmulqdq rdpid fsrm
"""
SAPPHIRE_RAPIDS_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities
"""
ICE_LAKE_AVX512_NO_BF16 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves wbnoinvd ida arat avx512vbmi pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq rdpid md_clear flush_l1d arch_capabilities
"""
GRAVITON3_NEOVERSE_V1 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""
GRAVITON2_NEOVERSE_N1 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize(
    ("cpuinfo", "native", "named"),
    [
        (ZEN3_AVX2, False, "no amx_bf16/avx512_bf16"),
        (ICE_LAKE_AVX512_NO_BF16, False, "no amx_bf16/avx512_bf16"),
        (SAPPHIRE_RAPIDS_AMX, True, "amx_bf16, avx512_bf16"),
        (GRAVITON3_NEOVERSE_V1, True, "Arm bf16"),
        (GRAVITON2_NEOVERSE_N1, False, "no Arm bf16"),
    ],
)
def test_native_bf16_is_read_from_real_cpuinfo_lines(cpuinfo: str, native: bool, named: str) -> None:
    support = bf16_from_cpuinfo(parse_cpu_flags(cpuinfo))
    assert support is not None and support.native is native and named in support.reason
    # Serving's `auto` takes the same answer: bf16 where native, ONNX Runtime elsewhere.
    runtime, reason = choose_runtime("auto", cuda=False, flags=parse_cpu_flags(cpuinfo))
    assert runtime == ("bf16" if native else "onnx") and support.reason in reason


def test_flags_that_say_nothing_leave_it_to_the_probe() -> None:
    assert bf16_from_cpuinfo(frozenset()) is None
    assert bf16_from_cpuinfo(parse_cpu_flags("processor\t: 0\nmodel name\t: something\n")) is None
    measured = probe_bf16(size=64, repeats=1)
    assert measured.reason.startswith("measured: a bf16 matmul takes") and isinstance(measured.native, bool)


def test_this_machine_resolves_as_its_flags_say() -> None:
    flags = cpu_flags()
    by_flags = bf16_from_cpuinfo(flags)
    if by_flags is None:
        pytest.skip(f"/proc/cpuinfo says nothing about bf16 here ({sorted(flags)[:5]}...): the probe decides")
    assert cpu_bf16() == by_flags
    precision, reason = resolve_precision("cpu")
    assert precision == ("bf16-mixed" if by_flags.native else "32-true") and reason == by_flags.reason
    assert resolve_precision("cpu", cuda=True)[0] == precision  # accelerator=cpu never asks the GPU


def _step(ns_dtype: str, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    param = torch.nn.Parameter(weight.clone())
    param.grad = grad.clone()
    optimizer = ConvMuonSGD([param], lr=0.1, momentum=0.95, weight_decay=0.0, ns_dtype=ns_dtype)
    optimizer.step()
    return (param.detach() - weight) / 0.1  # the orthogonalised update itself


def test_convmuonsgd_updates_agree_in_bf16_and_fp32() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 32, 3, 3, generator=generator) * 0.05
    grad = torch.randn(64, 32, 3, 3, generator=generator)
    bf16, fp32 = _step("bfloat16", weight, grad), _step("float32", weight, grad)
    # bf16 keeps 8 bits of mantissa; through five Newton-Schulz iterations (which leave the singular values
    # anywhere in about 0.7-1.2) the two updates differ by about 4% of the norm and point the same way.
    cosine = float(torch.nn.functional.cosine_similarity(bf16.flatten(), fp32.flatten(), dim=0))
    assert cosine > 0.99, cosine
    assert abs(float(bf16.norm() / fp32.norm()) - 1.0) < 0.05
    assert float(fp32.norm()) > 1.0  # a real step was taken (the update is orthogonalised, not zero)
    with pytest.raises(ValueError, match="ns_dtype must be 'auto', 'bfloat16' or 'float32'"):
        ConvMuonSGD([torch.nn.Parameter(weight)], ns_dtype="fp16")


@pytest.mark.slow
def test_a_fit_uses_and_records_the_precision_the_flags_call_for(in_tmp: Path) -> None:
    from imagenette_drift.card import CHECKPOINT_KEY
    from imagenette_drift.cli import cli_main

    by_flags = bf16_from_cpuinfo(cpu_flags()) or cpu_bf16()
    expected = "bf16-mixed" if by_flags.native else "32-true"
    # The console script in its own process, as a user runs it: its W&B run is its own (an in-process fit
    # after another one in the same test process would log into that first run's folder).
    exe = Path(sys.executable).with_name("imagenette")
    argv = quickstart_args("fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    # Without the W&B service token an earlier in-process run of this test process left in the environment: with
    # it the command would log through that process's W&B service instead of starting its own.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run([str(exe), *argv], cwd=in_tmp, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        f"Precision {expected}: auto: {by_flags.reason}." in done.stdout + done.stderr
    )  # said once at start
    card = torch.load(in_tmp / "outputs/quickstart/checkpoints/last.ckpt", weights_only=True)[CHECKPOINT_KEY]
    assert card["training"] == {"precision": expected, "reason": f"auto: {by_flags.reason}"}
    # The W&B run's config records hold the choice and its reason (JSON values inside the offline run file,
    # which W&B's service process writes on its own time: on a loaded machine after the command has exited).
    wanted, deadline, written = f'"reason":"auto: {by_flags.reason}"'.encode(), time.monotonic() + 120, b""
    while wanted not in written and time.monotonic() < deadline:
        runs = list((in_tmp / "outputs/quickstart/wandb").glob("offline-run-*/run-*.wandb"))
        written = runs[0].read_bytes() if runs else b""
        time.sleep(0.5)
    assert wanted in written

    # An explicit precision wins over the hardware's choice; `auto` is the same as leaving it unset.
    os.chdir(in_tmp)
    forced = cli_main(
        quickstart_args(
            "fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.precision=32-true"
        )
    )
    assert forced.trainer.precision == "32-true"
    card = torch.load(in_tmp / "outputs/quickstart/checkpoints/last.ckpt", weights_only=True)[CHECKPOINT_KEY]
    assert card["training"] == {"precision": "32-true", "reason": "requested (--trainer.precision)"}
    auto = cli_main(
        quickstart_args(
            "fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.precision", "auto"
        )
    )
    assert auto.trainer.precision == expected

"""Hardware profiles: what alignment and wave-quantization checks need, with the source of each figure.

Peak rates are dense (no 2:4 sparsity) bf16 tensor-core figures from NVIDIA's datasheets; SM counts
from NVIDIA's architecture whitepapers. 'cpu' has no SMs: wave checks are skipped there.
"""

from __future__ import annotations

from dataclasses import dataclass

from moelab.errors import MoelabError


@dataclass(frozen=True)
class Hardware:
    name: str
    sms: int  # streaming multiprocessors (0: not a GPU)
    bf16_tflops: float  # dense peak
    memory_gb: float
    gemm_align_bytes: int  # GEMM dims should be multiples of this many bytes (A100-class: 128)
    source: str


PROFILES = {
    "a100": Hardware("NVIDIA A100 SXM 80GB", 108, 312.0, 80, 128,
                     "NVIDIA A100 datasheet (312 TFLOPS bf16 dense); Ampere GA100 whitepaper (108 SMs)"),
    "h100": Hardware("NVIDIA H100 SXM", 132, 989.0, 80, 128,
                     "NVIDIA H100 datasheet (989 TFLOPS bf16 dense, SXM); Hopper whitepaper (132 SMs)"),
    "h200": Hardware("NVIDIA H200 SXM", 132, 989.0, 141, 128,
                     "NVIDIA H200 datasheet (same GH100 compute as H100 SXM, 141 GB HBM3e)"),
    "b200": Hardware("NVIDIA B200", 148, 2250.0, 180, 128,
                     "NVIDIA DGX/HGX B200 datasheets (2.25 PFLOPS bf16 dense per GPU; 148 SMs)"),
    "cpu": Hardware("CPU", 0, 0.0, 0, 16, "no tensor cores; 16-byte alignment for vector units"),
}


def hardware(name: str) -> Hardware:
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise MoelabError(f"--gpu {name!r}: unknown hardware; use one of {', '.join(PROFILES)}") from None

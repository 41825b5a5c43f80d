"""The machine's own limits, measured in the run that reports a speed: fp32 matmul rate and
memory bandwidth, and a network's work per frame (GFLOP) — so a benchmark can say what fraction
of the machine a stage uses. This machine's speed varies about 3× between days; a fraction of its
rate measured in the same run does not.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np
import torch


def matmul_gflops(n: int = 2048, repeat: int = 10, device: str = 'cpu') -> float:
    """fp32 n×n matmul rate with torch's current thread count (2·n³ flops per product)."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    for _ in range(3):
        a @ b
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)
    return 2.0 * n ** 3 * repeat / (time.perf_counter() - t0) / 1e9


def memory_gbps(mib: int = 256, repeat: int = 5) -> float:
    """Host memory bandwidth: a `mib` MiB array copied `repeat` times (read + write counted)."""
    src = np.ones(mib * 2 ** 20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t0 = time.perf_counter()
    for _ in range(repeat):
        np.copyto(dst, src)
    return 2.0 * src.nbytes * repeat / (time.perf_counter() - t0) / 1e9


def network_gflop(forward: Callable[[Mapping[str, torch.Tensor]], Any], inputs: Mapping[str, torch.Tensor]) -> float:
    """GFLOP of one call of `forward(inputs)`, counted by torch.utils.flop_counter (matmuls and
    convolutions: what bounds the network on a CPU)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward(inputs)
    return counter.get_total_flops() / 1e9

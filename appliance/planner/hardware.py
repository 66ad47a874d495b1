"""The box's hardware: its fingerprint, measured memory bandwidth and matrix FLOP/s, and a catalogue of GPUs."""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass

HOURS_PER_MONTH = 730


@dataclass(frozen=True, slots=True)
class Hardware:
    cpu_model: str
    cores: int
    memory_bytes: int
    fingerprint: str  # changes when the CPU model, the core count or the memory size does


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def this_box() -> Hardware:
    cpu, cores, memory = _cpu_model(), available_cores(), _memory_bytes()
    digest = hashlib.sha256(f"{cpu}|{cores}|{memory // 2**28}".encode()).hexdigest()[:16]
    return Hardware(cpu_model=cpu, cores=cores, memory_bytes=memory, fingerprint=digest)


def memory_bandwidth(threads: int, megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a parallel numpy copy (read + write) over buffers far larger than the caches; the best of
    `repeats`. numpy releases the GIL while copying, so the threads copy at the same time."""
    import numpy as np

    threads = max(1, threads)
    n = megabytes * 2**20 // 8 // threads
    src = [np.ones(n) for _ in range(threads)]
    dst = [np.empty(n) for _ in range(threads)]
    best = 0.0
    for _ in range(repeats):
        workers = [threading.Thread(target=np.copyto, args=(d, s)) for d, s in zip(dst, src, strict=True)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        best = max(best, 2 * n * 8 * threads / elapsed)
    return best


def matmul_flops(size: int = 768, repeats: int = 5) -> float:
    """FLOP/s of a float32 matrix product (BLAS, every core): the box's dense compute, best of `repeats`."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """A GPU from the datasheet (not measured on this box: every prediction for it is marked uncalibrated)."""

    name: str
    memory_bytes: int
    bandwidth: float  # bytes/s, nominal
    flops: float  # dense FP16/BF16 tensor FLOP/s, nominal
    usd_per_hour: float  # a typical on-demand cloud price, 2025
    watts: int
    calibrated: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


GB = 10**9
GPU_CATALOGUE: tuple[GpuSpec, ...] = (
    GpuSpec("H100-80GB-SXM", 80 * GB, 3350 * GB, 989e12, 3.00, 700),
    GpuSpec("H200-141GB-SXM", 141 * GB, 4800 * GB, 989e12, 3.80, 700),
    GpuSpec("A100-80GB-SXM", 80 * GB, 2039 * GB, 312e12, 1.80, 400),
    GpuSpec("L40S-48GB", 48 * GB, 864 * GB, 181e12, 1.00, 350),
    GpuSpec("L4-24GB", 24 * GB, 300 * GB, 121e12, 0.50, 72),
)

# Share of the datasheet a serving engine reaches without measurement here (published decode runs reach
# 55-80% of nominal bandwidth; prefill rarely passes half the tensor peak).
GPU_BANDWIDTH_EFFICIENCY = 0.7
GPU_COMPUTE_EFFICIENCY = 0.45

"""Pick the compute device: CUDA, then MPS, then CPU; and keep the CPU's memory for reuse."""

from __future__ import annotations

import ctypes
import os
import platform

import torch

__all__ = ["resolve_device", "describe_devices", "keep_freed_memory"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_kept: bool | None = None


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA, then Apple MPS, then CPU) or an explicit ``cpu``/``cuda[:N]``/``mps``."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple MPS is not available; use --device auto or cpu")
    if name not in {"cpu", "mps"} and not name.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    return torch.device(name)


def describe_devices() -> str:
    """One line naming what was found, for the GUI and logs."""
    found = ["CPU"]
    if torch.cuda.is_available():
        found.append(f"CUDA: {torch.cuda.get_device_name(0)}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("Apple MPS")
    return ", ".join(found)


def keep_freed_memory() -> bool:
    """Let the C allocator keep freed memory for the next frame instead of returning it.

    Every frame allocates and frees the network's activations, blocks of up to tens of MB.
    By default glibc maps such blocks fresh from the system and unmaps them when freed, so
    the next frame takes a page fault on every 4 kB page and the kernel zeroes it again: some
    200,000 faults per 1024² frame, a third of its time on two cores (docs/benchmarks.md).
    Torch has no caching allocator for the CPU, and the usual cure (preloading jemalloc or
    tcmalloc) is not open to a plugin, so this raises glibc's thresholds: blocks below
    256 MB come from the heap, up to 1 GB of freed heap is kept, and all threads share one
    heap (another thread's own heaps are capped at 64 MB, past which blocks are mapped
    afresh again). The process then holds on to its peak memory rather than giving it back
    between frames. Process-wide and once; threads started later (napari's workers) benefit
    too (threads that already had their own heap get torch's transparent huge pages instead,
    set up at package import). ``NCT_KEEP_FREED_MEMORY=0`` turns it off; elsewhere than glibc
    it does nothing.

    Returns
    -------
    bool
        Whether the allocator was set up (now or by an earlier call).
    """
    global _kept
    if _kept is None:
        _kept = False
        if os.environ.get("NCT_KEEP_FREED_MEMORY", "1") != "0" and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
                _kept = bool(mallopt(_M_MMAP_THRESHOLD, 256 << 20) and mallopt(_M_TRIM_THRESHOLD, 1 << 30)
                             and mallopt(_M_ARENA_MAX, 1))
            except (OSError, AttributeError):
                pass
    return _kept

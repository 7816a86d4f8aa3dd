"""Pick the compute device: CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "describe_devices"]


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

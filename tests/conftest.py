"""Shared fixtures: the CTC data folder (skipped when absent) and a synthetic movie."""

import os
from pathlib import Path

import pytest
import torch

from napari_cosine_tracker.core.synthetic import make_synthetic_movie

# Two torch threads on two cores already shared by another worker (pytest-xdist) or by Qt
# spin-wait and run far slower than one: keep each test process to one thread when parallel.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# ../shared/data relative to the repository root.
_DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared CTC data folder (``$NCT_SHARED_DATA`` or ``../shared/data``).

    Tests that need it are skipped, with the reason, where it is absent.
    """
    env = os.environ.get("NCT_SHARED_DATA")
    path = Path(env) if env else _DEFAULT_SHARED
    if not (path / "ctc").is_dir():
        pytest.skip(f"shared CTC data not found at {path} (set NCT_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def synthetic_movie():
    """The default seeded synthetic movie (30 x 256 x 256, dividing cells). Do not modify."""
    return make_synthetic_movie(n_frames=30, shape=(256, 256), seed=0)

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


@pytest.fixture(autouse=True)
def _autosave_in_tmp(tmp_path, monkeypatch):
    """Corrections of movies without a file are autosaved in a per-user folder: during a
    test that is a folder of its own, never the user's home (nor another test's)."""
    from napari_cosine_tracker.core.edit import AUTOSAVE_ENV

    monkeypatch.setenv(AUTOSAVE_ENV, str(tmp_path / "autosave"))


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


@pytest.fixture(scope="session")
def dividing_movie():
    """A small seeded movie (12 x 96 x 96) with at least one division: the exports' and
    GEFF tests' data. Do not modify."""
    m = make_synthetic_movie(n_frames=12, shape=(96, 96), n_cells=6, radius=(8, 12), seed=3,
                             division_rate=0.15)
    assert (m.lineage[:, 3] > 0).any(), "the fixture should contain a division"
    return m


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory):
    """``make(seed=0, filters=8, levels=3, stacks=1, embedding_dim=4, pixel_scale=0.5)``: a
    small randomly initialised model saved as a model folder (seconds to run on two cores)."""
    from napari_cosine_tracker.core.model import ModelConfig, RecurrentHourglass, save_model

    def make(seed=0, filters=8, levels=3, stacks=1, embedding_dim=4, pixel_scale=0.5):
        torch.manual_seed(seed)
        model = RecurrentHourglass(ModelConfig(filters=filters, levels=levels, stacks=stacks,
                                               embedding_dim=embedding_dim))
        meta = {"preprocessing": {"pixel_scale": pixel_scale}} if pixel_scale else None
        return save_model(model, tmp_path_factory.mktemp("tiny") / "m", meta)

    return make


@pytest.fixture
def isolated_settings(tmp_path):
    """Keep the widgets' remembered settings (QSettings) out of the user's home."""
    from qtpy.QtCore import QSettings

    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "settings"))


@pytest.fixture
def errors(monkeypatch):
    """Error notifications napari shows the user during the test."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    # as in the running app (tests default to printing errors instead of notifying)
    monkeypatch.setattr(notification_manager, "catch_error", True)
    seen = []

    def record(n):
        if n.severity >= NotificationSeverity.ERROR:
            seen.append(n)

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)

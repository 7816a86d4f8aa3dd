"""Sample data: a synthetic movie of moving, dividing nuclei, made on the spot (about a second)."""

from __future__ import annotations

from napari_cosine_tracker.core.synthetic import make_synthetic_movie

from .layers import result_layer_data

__all__ = ["synthetic_movie", "synthetic_movie_with_truth"]

SAMPLE_NAME = "synthetic nuclei"


def _movie(n_frames=30, shape=(256, 256), seed=0):
    return make_synthetic_movie(n_frames=n_frames, shape=shape, seed=seed)


def synthetic_movie(n_frames: int = 30, shape=(256, 256), seed: int = 0) -> list[tuple]:
    """The movie alone, ready for the tracker widget."""
    m = _movie(n_frames, shape, seed)
    return [(m.images, {"name": SAMPLE_NAME}, "image")]


def synthetic_movie_with_truth(n_frames: int = 30, shape=(256, 256), seed: int = 0) -> list[tuple]:
    """The movie plus its true tracks (Labels + Tracks), e.g. to compare with a result."""
    m = _movie(n_frames, shape, seed)
    return [(m.images, {"name": SAMPLE_NAME}, "image")] + result_layer_data(
        m.labels, m.lineage, name=f"{SAMPLE_NAME} truth")

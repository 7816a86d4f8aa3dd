"""Synthetic movies: shapes, determinism, and ground truth consistent with the lineage."""

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cosine_tracker.core.synthetic import SyntheticMovie, make_synthetic_movie


def test_types_and_shapes(synthetic_movie):
    m = synthetic_movie
    assert isinstance(m, SyntheticMovie)
    assert m.images.shape == m.labels.shape == (30, 256, 256)
    assert m.images.dtype == np.uint16 and m.labels.dtype == np.uint16
    assert m.lineage.dtype == np.int64 and m.lineage.ndim == 2 and m.lineage.shape[1] == 4
    assert len(m) == 30 and m.shape == (30, 256, 256)


def test_deterministic_and_seeded():
    a = make_synthetic_movie(n_frames=6, shape=(96, 96), n_cells=4, seed=3)
    b = make_synthetic_movie(n_frames=6, shape=(96, 96), n_cells=4, seed=3)
    c = make_synthetic_movie(n_frames=6, shape=(96, 96), n_cells=4, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.lineage, b.lineage)
    assert not np.array_equal(a.images, c.images)


def test_lineage_matches_labels(synthetic_movie):
    """Every track is present exactly on frames first..last; daughters start after mothers."""
    m = synthetic_movie
    rows = {int(r[0]): r for r in m.lineage}
    present = {i: [] for i in rows}
    for t in range(len(m)):
        ids = np.unique(m.labels[t])
        for i in ids[ids > 0]:
            assert int(i) in rows, f"label {i} at t={t} has no lineage row"
            present[int(i)].append(t)
    for i, (tid, first, last, parent) in rows.items():
        assert present[i] == list(range(first, last + 1)), f"track {i} not contiguous"
        if parent:
            assert rows[int(parent)][2] == first - 1, "daughter must start right after mother"


def test_divisions_entries_and_exits(synthetic_movie):
    m = synthetic_movie
    lin = m.lineage
    mothers, counts = np.unique(lin[lin[:, 3] > 0, 3], return_counts=True)
    assert mothers.size >= 2 and m.n_divisions == mothers.size
    assert (counts <= 2).all()
    # Cells enter (start after frame 0 without a parent) or leave (end before the last frame).
    assert ((lin[:, 1] > 0) & (lin[:, 3] == 0)).any()  # entered
    assert ((lin[:, 2] < len(m) - 1) & ~np.isin(lin[:, 0], lin[:, 3])).any()  # left
    # Daughters are smaller than their mother's last mask (unless the border cuts her).
    for mother in mothers:
        last = lin[lin[:, 0] == mother, 2][0]
        mask = m.labels[last] == mother
        if mask[[0, -1], :].any() or mask[:, [0, -1]].any():
            continue
        area_m = mask.sum()
        for d in lin[lin[:, 3] == mother, 0]:
            assert (m.labels[last + 1] == d).sum() < area_m


def test_masks_connected_sized_and_bright(synthetic_movie):
    m = synthetic_movie
    diam = []
    for t in (0, len(m) // 2, len(m) - 1):
        lab = m.labels[t]
        for i in np.unique(lab)[1:]:
            assert ndi.label(lab == i)[1] == 1, f"mask {i} at t={t} in pieces"
        fg, bg = m.images[t][lab > 0], m.images[t][lab == 0]
        assert fg.mean() > 3 * bg.mean()  # nuclei clearly brighter than the background
        assert fg.std() > 0.05 * fg.mean()  # textured, not flat
        areas = np.bincount(lab.ravel())[1:]
        diam += list(2 * np.sqrt(areas[areas > 0] / np.pi))
    # Default radius gives nuclei of about 28-44 px diameter (cells cut by the border are
    # smaller, so look at the largest ones).
    assert 25 <= np.percentile(diam, 90) <= 55


def test_touching_cells_occur():
    m = make_synthetic_movie(n_frames=10, shape=(128, 128), n_cells=12, seed=1)
    touching = 0
    for lab in m.labels:
        a, b = lab[:, :-1], lab[:, 1:]
        touching += np.count_nonzero((a > 0) & (b > 0) & (a != b))
    assert touching > 0


def test_no_divisions_option():
    m = make_synthetic_movie(n_frames=20, shape=(128, 128), n_cells=6, divisions=False)
    assert (m.lineage[:, 3] == 0).all()


def test_fast():
    t0 = time.perf_counter()
    make_synthetic_movie()
    assert time.perf_counter() - t0 < 5.0  # ~0.5 s on one core; generous on a busy machine


@pytest.mark.parametrize("kw", [dict(n_frames=0), dict(shape=(8, 8)), dict(radius=(5, 2)),
                                dict(n_cells=-1)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        make_synthetic_movie(**kw)

"""The global linker (core.link) and the `link` command: given masks in, CTC tracks out."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.io import check_lineage, read_ctc_result, write_ctc_gt
from napari_cosine_tracker.core.link import LinkParams, cell_features, estimate_motion, link_labels
from napari_cosine_tracker.core.metrics import evaluate
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.core.track import link_frames


def _shuffled(labels, seed=0):
    """Masks with fresh ids in every frame, as cellpose or StarDist would give."""
    rng = np.random.default_rng(seed)
    out = np.zeros(labels.shape, np.int32)
    for t, lab in enumerate(labels):
        ids = np.unique(lab)
        ids = ids[ids > 0]
        lut = np.zeros(int(lab.max()) + 1, np.int32)
        lut[ids] = rng.permutation(ids.size) + 1
        out[t] = lut[lab]
    return out


def _disk(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _presence(tracked):
    return {t: np.unique(f)[np.unique(f) > 0].tolist() for t, f in enumerate(tracked)}


def test_global_linker_beats_iou_chaining_on_synthetic_masks(tmp_path):
    """Gold masks of an unseen synthetic movie, ids shuffled per frame: the global linker's
    tracks score at least as well as IoU chaining, and its divisions are found."""
    movie = make_synthetic_movie(n_frames=30, shape=(256, 256), seed=7, speed=3.0)
    gt = write_ctc_gt(tmp_path / "01_GT", movie.labels, movie.lineage)
    masks = _shuffled(movie.labels)
    scores = {}
    for name, (tracked, lineage) in {
        "global": link_labels(masks)[:2], "iou": link_frames(masks)}.items():
        assert check_lineage(lineage, _presence(tracked), n_frames=len(masks)) == []
        res = tmp_path / f"{name}_RES"
        from napari_cosine_tracker.core.io import write_ctc_result

        write_ctc_result(res, tracked, lineage)
        scores[name] = evaluate(res, gt, ["DET", "TRA", "LNK", "BC", "CT"])
    assert scores["global"]["LNK"] >= 0.97
    assert scores["global"]["LNK"] >= scores["iou"]["LNK"] - 1e-9
    if (movie.lineage[:, 3] > 0).any():
        assert scores["global"]["BC(1)"] >= 0.5


def test_division_far_from_mothers_footprint_is_found():
    """A mother splits into two daughters that move off her footprint at once: IoU cannot
    see it, the assignment does, with exactly two daughters and the mother as parent."""
    shape = (120, 160)
    frames = []
    for t in range(6):
        lab = np.zeros(shape, np.int32)
        if t < 3:
            lab[_disk(shape, 60, 80, 12)] = 5
        else:
            d = 14 + 2 * (t - 3)
            lab[_disk(shape, 60, 80 - d, 8)] = 1 + t
            lab[_disk(shape, 60, 80 + d, 8)] = 2 + 3 * t
        lab[_disk(shape, 20, 20, 8)] = 9  # a bystander
        frames.append(lab)
    tracked, lineage, _ = link_labels(np.stack(frames))
    kids = lineage[lineage[:, 3] > 0]
    assert len(kids) == 2 and len(set(kids[:, 3].tolist())) == 1
    mother = lineage[lineage[:, 0] == kids[0, 3]][0]
    assert (mother[1], mother[2]) == (0, 2)
    assert set(kids[:, 1].tolist()) == {3}


def test_cell_missing_for_a_frame_comes_back_into_its_lineage():
    shape = (100, 100)
    frames = []
    for t in range(7):
        lab = np.zeros(shape, np.int32)
        if t != 3:
            lab[_disk(shape, 50, 20 + 5 * t, 8)] = 3
        lab[_disk(shape, 15, 80, 6)] = 4
        frames.append(lab)
    # default: one track, the missing frame filled with the cell's last mask
    tracked, lineage, info = link_labels(np.stack(frames), LinkParams(gap_frames=2))
    moving = {int(tracked[t][50, 20 + 5 * t]) for t in range(7) if t != 3}
    assert len(moving) == 1 and info["gaps_filled"] == 1
    (tid,) = moving
    np.testing.assert_array_equal(tracked[3] == tid, frames[2] == 3)  # frame 2's mask stands in
    assert sorted(lineage[:, 0].tolist()) == [1, 2] and (lineage[:, 3] == 0).all()
    assert check_lineage(lineage, _presence(tracked), n_frames=7) == []
    # without filling: the CTC convention
    tracked, lineage, _ = link_labels(np.stack(frames), LinkParams(gap_frames=2, fill_gaps=False))
    moving = {int(tracked[t][50, 20 + 5 * t]) for t in range(7) if t != 3}
    assert len(moving) == 2  # the gap ends one track and starts the next ...
    after = lineage[lineage[:, 0] == int(tracked[4][50, 40])][0]
    before = int(tracked[2][50, 30])
    assert after[3] == before  # ... whose parent is the track before the gap (CTC convention)
    assert check_lineage(lineage, _presence(tracked), n_frames=7) == []
    _, no_gap, _ = link_labels(np.stack(frames), LinkParams(gap_frames=0))
    assert (no_gap[:, 3] == 0).all()


def test_links_never_jump_farther_than_the_movie_moves():
    """Cells drifting 2 px a frame: a cell vanishing and another appearing 60 px away is not
    a link, because the reach is learnt from the movie's own motion."""
    shape = (200, 200)
    frames = []
    for t in range(10):
        lab = np.zeros(shape, np.int32)
        for k, (y, x) in enumerate([(30, 30), (30, 150), (150, 30), (150, 150)]):
            lab[_disk(shape, y, x + 2 * t, 7)] = k + 1
        if t < 5:
            lab[_disk(shape, 100, 60, 7)] = 10
        else:
            lab[_disk(shape, 100, 120, 7)] = 11
        frames.append(lab)
    frames = np.stack(frames)
    cells = cell_features(frames)
    reach = estimate_motion(cells)
    assert 2.0 <= reach < 15
    tracked, lineage, info = link_labels(frames)
    assert info["max_displacement"] == pytest.approx(reach)
    assert tracked[4][100, 60] != tracked[5][100, 120]
    row = lineage[lineage[:, 0] == tracked[5][100, 120]][0]
    assert row[3] == 0  # not a gap link or daughter of the vanished cell either


def test_fragment_breaking_off_is_not_a_division():
    shape = (100, 100)
    frames = []
    for t in range(5):
        lab = np.zeros(shape, np.int32)
        lab[_disk(shape, 50, 50, 12)] = 1
        if t >= 3:
            lab[_disk(shape, 50, 66, 3)] = 2
        frames.append(lab)
    _, lineage, _ = link_labels(np.stack(frames))
    assert (lineage[:, 3] == 0).all()


def test_two_thousand_cells_a_frame_link_fast_enough():
    """A crowded movie: a 40 x 50 grid of small cells, jittering; ids shuffled. Linking works
    and stays far inside the 20 ms per frame per 100 cells budget on two cores."""
    import time

    import laptrack  # noqa: F401  (its import, a second, is not the linker's cost)

    rng = np.random.default_rng(0)
    shape = (640, 800)
    ys, xs = np.meshgrid(np.arange(8, 640, 16), np.arange(8, 800, 16), indexing="ij")
    frames = []
    for t in range(4):
        lab = np.zeros(shape, np.int32)
        jy = ys + rng.integers(-1, 2, ys.shape)
        jx = xs + rng.integers(-1, 2, xs.shape)
        ids = rng.permutation(ys.size) + 1
        for (y, x), i in zip(zip(jy.ravel(), jx.ravel()), ids):
            lab[y - 4 : y + 4, x - 4 : x + 4] = i
        frames.append(lab)
    frames = np.stack(frames)
    start = time.perf_counter()
    tracked, lineage, _ = link_labels(frames)
    seconds = time.perf_counter() - start
    assert ys.size == 2000
    assert len(lineage) == 2000  # every cell kept its track
    assert seconds / 4 / 20 < 0.020 * 3  # ms per frame per 100 cells, with CI headroom


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 10, 10), np.float32), "integer label image"),
    (-np.ones((3, 10, 10), np.int32), "negative labels"),
])
def test_bad_masks_are_refused_with_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        link_labels(bad)


def test_link_command_tracks_cellpose_style_masks_and_checks_the_movie(tmp_path, capsys):
    movie = make_synthetic_movie(n_frames=8, shape=(128, 128), seed=3)
    masks = tmp_path / "masks"
    masks.mkdir()
    for t, lab in enumerate(_shuffled(movie.labels)):
        tifffile.imwrite(masks / f"t{t:03d}_cp_masks.tif", lab.astype(np.uint16))
    images = tmp_path / "movie.tif"
    tifffile.imwrite(images, movie.images)
    assert main(["link", str(masks), "-o", str(tmp_path / "RES"), "--images", str(images)]) == 0
    labels, tracks = read_ctc_result(tmp_path / "RES")
    assert len(labels) == 8 and len(tracks) >= 1
    assert "learnt from the movie" in capsys.readouterr().out
    # masks that do not fit the movie: a clear error naming the fix, nothing written
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, movie.images[:5])
    assert main(["link", str(masks), "-o", str(tmp_path / "RES2"), "--images", str(other)]) == 2
    assert "do not fit" in capsys.readouterr().err
    assert not (tmp_path / "RES2").exists()
    floats = tmp_path / "prob.tif"
    tifffile.imwrite(floats, movie.labels.astype(np.float32))
    assert main(["link", str(floats), "-o", str(tmp_path / "RES3")]) == 2
    assert "floating-point" in capsys.readouterr().err


def test_pipeline_global_linker_keeps_the_pair_links(make_tiny_model, tmp_path):
    """The model pipeline with linker='global' gives a valid lineage over the same cells as
    the paper's chaining (it re-links, it does not re-segment)."""
    from napari_cosine_tracker.core.pipeline import track_movie
    from napari_cosine_tracker.core.track import TrackParams

    movie = make_synthetic_movie(n_frames=6, shape=(96, 96), seed=1)
    model_dir = make_tiny_model()
    a = track_movie(movie.images, model_dir, device="cpu", track_params=TrackParams(linker="pairs"))
    b = track_movie(movie.images, model_dir, device="cpu", track_params=TrackParams(linker="global"))
    assert check_lineage(b.lineage, _presence(b.labels), n_frames=6) == []
    assert np.array_equal(np.asarray(a.labels) > 0, np.asarray(b.labels) > 0)


def test_a_gap_whose_place_is_taken_keeps_the_ctc_convention():
    """When other cells cover the whole place of a cell lost for a frame, nothing is painted
    over them: the gap stays a parent link, and the result is a valid CTC lineage."""
    from napari_cosine_tracker.core.link import fill_gaps

    tracked = np.zeros((4, 20, 20), np.int32)
    tracked[0:2, 2:8, 2:8] = 1
    tracked[2, 2:8, 2:8] = 3  # another cell sits exactly there in frame 2
    tracked[3, 3:9, 3:9] = 2
    lineage = np.array([[1, 0, 1, 0], [2, 3, 3, 1], [3, 2, 2, 0]])
    out, lin, n = fill_gaps(tracked.copy(), lineage)
    assert n == 0 and np.array_equal(out, tracked) and np.array_equal(lin, lineage)
    tracked[2, 2:8, 2:8] = 0
    tracked[2, 2:4, 2:8] = 3  # now part of its place is free
    out, lin, n = fill_gaps(tracked.copy(), lineage)
    assert n == 1 and (out[2] == 1).sum() == 24 and check_lineage(lin, _presence(out), n_frames=4) == []


def test_a_speck_that_comes_and_goes_is_not_filled():
    """A gap after a mask far smaller than the movie's cells (a cell leaving the focal plane,
    debris) keeps the CTC convention; a gap after a cell-sized mask is filled."""
    from napari_cosine_tracker.core.link import fill_gaps

    tracked = np.zeros((4, 40, 40), np.int32)
    tracked[:, 20:30, 20:30] = 5  # three cells of the movie's size, present throughout
    tracked[:, 20:30, 2:12] = 6
    tracked[:, 2:12, 20:30] = 7
    tracked[0:2, 2:4, 2:4] = 1  # a 4-pixel speck, lost in frame 2
    tracked[3, 2:4, 2:4] = 2
    lineage = np.array([[1, 0, 1, 0], [2, 3, 3, 1], [5, 0, 3, 0], [6, 0, 3, 0], [7, 0, 3, 0]])
    out, lin, n = fill_gaps(tracked.copy(), lineage)
    assert n == 0 and np.array_equal(out, tracked)
    tracked[0:2, 2:10, 2:10] = 1  # the same gap after a cell-sized mask is filled
    tracked[3, 2:10, 2:10] = 2
    out, lin, n = fill_gaps(tracked.copy(), lineage)
    assert n == 1 and (out[2, 2:10, 2:10] > 0).all() and len(lin) == 4
    assert check_lineage(lin, _presence(out), n_frames=4) == []


def test_a_cell_cut_in_two_for_a_frame_is_not_a_division():
    """A nucleus the segmentation cuts in two for one frame, then whole again: with
    ``min_daughter_frames`` 3 its track goes on unbroken and the piece is a track of its
    own; with 1 it is the division the masks show."""
    shape = (100, 140)
    frames = []
    for t in range(8):
        lab = np.zeros(shape, np.int32)
        if t == 3:  # cut in two halves, side by side
            lab[_disk(shape, 50, 62, 10)] = 4
            lab[_disk(shape, 50, 82, 10)] = 7
        else:
            lab[_disk(shape, 50, 70 + (t > 3) * 2, 13)] = 3 + t
        lab[_disk(shape, 15, 15, 8)] = 1  # a bystander
        frames.append(lab)
    kept, lineage_kept, _ = link_labels(np.stack(frames), LinkParams(min_daughter_frames=1, sure_iou=1.0))
    assert (lineage_kept[:, 3] > 0).sum() == 2  # the masks' "division", as given
    tracked, lineage, _ = link_labels(np.stack(frames), LinkParams(min_daughter_frames=3, sure_iou=1.0))
    check_lineage(lineage)
    cell = tracked[0][50, 70]
    assert all(tracked[t][50, 72 if t > 3 else 70] == cell for t in range(8) if t != 3)
    assert not (lineage[:, 3] > 0).any()  # no division: the piece starts its own track
    assert len(np.unique(tracked[3])) - 1 == 3  # bystander, the cell, the piece

"""Streaming inference, the pipeline and its session, on synthetic movies with a tiny model."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from napari_cosine_tracker.core.cluster import ClusterParams
from napari_cosine_tracker.core.inference import EmbeddingStream
from napari_cosine_tracker.core.pipeline import TrackingSession, track_movie, upsample_labels
from napari_cosine_tracker.core.synthetic import make_synthetic_movie


@pytest.fixture(scope="module")
def tiny_model_dir(make_tiny_model):
    return make_tiny_model(stacks=2)


@pytest.fixture(scope="module")
def movie():
    return make_synthetic_movie(n_frames=5, shape=(96, 112), n_cells=5, seed=3)


def test_stream_keeps_state_and_resumes(tiny_model_dir, movie, tmp_path):
    stream = EmbeddingStream(tiny_model_dir, device="cpu")
    first = [stream.push(f) for f in movie.images[:3]]
    assert first[0].shape == (4, 48, 56)
    assert np.allclose(np.linalg.norm(first[0], axis=0), 1, atol=1e-4)
    state = {k: v.clone() for k, v in stream.get_state().items()}
    straight = stream.push(movie.images[3])
    other = EmbeddingStream(tiny_model_dir, device="cpu")
    other.set_state(state)
    assert other.frames_seen == 3
    assert np.allclose(other.push(movie.images[3]), straight, atol=1e-5)
    fresh = EmbeddingStream(tiny_model_dir, device="cpu").push(movie.images[3])
    assert not np.allclose(fresh, straight, atol=1e-3)


def test_tiles_stitch_without_seams(tiny_model_dir):
    rng = np.random.default_rng(0)
    frame = rng.random((400, 440)).astype(np.float32)
    whole = EmbeddingStream(tiny_model_dir, device="cpu", tile_size=512).push(frame)
    tiled = EmbeddingStream(tiny_model_dir, device="cpu", tile_size=120, tile_overlap=80).push(frame)
    assert tiled.shape == whole.shape == (4, 200, 220)
    # The tiny model's receptive field (radius ~30 model px over two stacks) fits inside
    # the 40-px margin each tile keeps, so tiles agree with the whole frame.
    assert np.abs(tiled - whole).max() < 1e-3


@pytest.mark.parametrize("length", [513, 588, 735, 1024, 2000])
def test_tiles_are_balanced(length):
    """Tiles just past the tile size cost the overlap, not a second whole tile: all of one
    size (a multiple of the padding unit), each keeping at least half the overlap as margin,
    their kept ranges covering the side once."""
    from napari_cosine_tracker.core.inference import _tiles

    tiles = _tiles(length, 512, 64, 32)
    sizes = {y1 - y0 for y0, y1, _, _ in tiles}
    assert len(sizes) == 1 and sizes.pop() <= 512 and len(tiles) == -(-(length - 64) // 448)
    assert tiles[0][2] == 0 and tiles[-1][3] == length and tiles[-1][1] == length
    for (a0, a1, _, ka1), (b0, _, kb0, _) in zip(tiles, tiles[1:]):
        assert ka1 == kb0 and a1 - ka1 >= 32 and kb0 - b0 >= 32
    computed = sum(y1 - y0 for y0, y1, _, _ in tiles)
    assert computed <= length + 64 * (len(tiles) - 1) + 32 * len(tiles)


def test_frame_shape_change_is_an_error(tiny_model_dir, movie):
    stream = EmbeddingStream(tiny_model_dir, device="cpu")
    stream.push(movie.images[0])
    with pytest.raises(ValueError, match="shape"):
        stream.push(movie.images[0][:50])


def test_track_movie_in_memory_and_on_disk_agree(tiny_model_dir, movie, tmp_path):
    calls = []
    res = track_movie(movie.images, tiny_model_dir, device="cpu", progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (5, 5)
    assert res.labels.shape == movie.images.shape
    lin = res.lineage
    assert lin.shape[1] == 4
    # Every id in the labels has a lineage row covering its frames.
    for t in range(len(movie.images)):
        for i in np.unique(res.labels[t])[1:]:
            row = lin[lin[:, 0] == i][0]
            assert row[1] <= t <= row[2]
    disk = track_movie(movie.images, tiny_model_dir, device="cpu", store_dir=tmp_path)
    assert np.array_equal(disk.labels.array(), res.labels)
    assert np.array_equal(disk.lineage, res.lineage)


def test_session_pause_resume_matches_track_movie(tiny_model_dir, movie):
    session = TrackingSession(movie.images, tiny_model_dir, device="cpu")
    for t in session.run_model():
        if t == 1:
            break  # pause
    assert session.frames_done == 2
    assert list(session.run_model()) == [2, 3, 4]
    rgb = session.pca_rgb(2)
    assert rgb.shape == movie.images.shape[1:] + (3,) and 0 <= rgb.min() and rgb.max() <= 1
    list(session.track())
    straight = track_movie(movie.images, tiny_model_dir, device="cpu")
    assert np.array_equal(session.result.labels, straight.labels)


def test_session_live_relabel_equals_from_scratch(tiny_model_dir, movie):
    session = TrackingSession(movie.images, tiny_model_dir, device="cpu")
    list(session.run_model())
    session.cluster_pair(2, ClusterParams(min_cluster_size=20))
    live = session.cluster_pair(2, min_cluster_size=60)
    fresh = TrackingSession(movie.images, tiny_model_dir, device="cpu")
    list(fresh.run_model())
    scratch = fresh.cluster_pair(2, ClusterParams(min_cluster_size=60))
    assert all(np.array_equal(a, b) for a, b in zip(live, scratch))


def test_track_before_model_is_an_error(tiny_model_dir, movie):
    session = TrackingSession(movie.images, tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="finish the run"):
        list(session.track())


def test_upsample_labels_is_smooth_and_keeps_ids():
    small = np.zeros((20, 20), np.int32)
    small[5:15, 5:15] = 7
    bg = np.where(small > 0, -1.0, 1.0).astype(np.float32)
    big = upsample_labels(small, bg, (40, 40), 0.5)
    assert set(np.unique(big)) == {0, 7}
    assert abs((big > 0).sum() - 400) < 60


def test_shrink_takes_pixels_off_every_border_but_never_a_whole_cell():
    from napari_cosine_tracker.core.pipeline import shrink_labels

    lab = np.zeros((20, 20), np.int32)
    lab[2:10, 2:10] = 1
    lab[2:10, 10:18] = 2  # touches 1
    lab[15, 15] = 3       # one pixel: would vanish
    out = shrink_labels(lab, 1)
    assert (out == 1).sum() == 36 and (out == 2).sum() == 36  # 8x8 -> 6x6, also where they touch
    assert (out == 3).sum() == 1
    assert not (out[lab == 0]).any()
    np.testing.assert_array_equal(shrink_labels(lab, 0), lab)
    with pytest.raises(ValueError, match="shrink"):
        ClusterParams(shrink=-1)


def test_scale_fits_cells_of_another_size_to_the_model(tmp_path):
    """A movie whose cells are twice as wide, run with scale 0.5, reaches the model as the
    original does, and the cells come back at the movie's size (shipped model)."""
    from napari_cosine_tracker.core.cli import main

    m = make_synthetic_movie(n_frames=5, shape=(128, 128), n_cells=5, seed=4, divisions=False)
    big = np.kron(m.images, np.ones((1, 2, 2), m.images.dtype))
    s1, s2 = EmbeddingStream(device="cpu"), EmbeddingStream(device="cpu", scale=0.5)
    for small_f, big_f in zip(m.images, big):
        a, b = s1.push(small_f), s2.push(big_f)
    assert s1.model_shape == s2.model_shape
    assert float(np.mean(np.sum(a * b, axis=0))) > 0.95
    r1 = track_movie(m.images, device="cpu")
    r2 = track_movie(big, stream=EmbeddingStream(device="cpu", scale=0.5))
    assert r2.labels.shape == big.shape
    for f1, f2 in zip(r1.labels, r2.labels):
        assert abs(len(np.unique(f1)) - len(np.unique(f2))) <= 1
    with pytest.raises(ValueError, match="scale must be"):
        EmbeddingStream(device="cpu", scale=0)
    import tifffile

    tifffile.imwrite(tmp_path / "movie.tif", big)
    assert main(["track", str(tmp_path / "movie.tif"), "-o", str(tmp_path / "res"), "--scale", "0",
                 "--device", "cpu", "--quiet"]) == 2
    assert not (tmp_path / "res").exists()


_PUSH_CHILD = """
import ctypes, json, resource, sys
# PR_SET_THP_DISABLE: 4 kB pages whatever the kernel's transparent huge page setting, so that
# a fault count is a page count
assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0
import numpy as np, torch
from napari_cosine_tracker.core.devices import keep_freed_memory
from napari_cosine_tracker.core.inference import EmbeddingStream
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
stream = EmbeddingStream(device="cpu")  # keeps freed memory on a CPU unless turned off
for f in make_synthetic_movie(n_frames=3, shape=(256, 256), n_cells=8, seed=3).images:
    emb = stream.push(f)
np.save(sys.argv[1], emb)
faults = []
# A 64 MB activation block (1024x1024 frames have them), freed, then needed again. The first
# few may map pages (where the kept heap places the block depends on what the model left on
# it: packed weights, states); once the heap holds one, a kept heap reuses it.
for _ in range(6):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(2**24)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"kept": keep_freed_memory(), "faults": faults}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's malloc")
def test_freed_memory_is_reused_without_page_faults_and_same_embeddings(tmp_path):
    """With freed memory kept (the default, set by EmbeddingStream) a block the size of a
    frame's activations reuses the previous one's pages instead of faulting all 16,384 in
    afresh; NCT_KEEP_FREED_MEMORY=0 turns it off. Same embeddings either way."""
    out = {}
    for flag in ("0", "1"):
        proc = subprocess.run([sys.executable, "-c", _PUSH_CHILD, str(tmp_path / f"{flag}.npy")],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, NCT_KEEP_FREED_MEMORY=flag, OMP_NUM_THREADS="1"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[flag] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["0"]["kept"] is False and out["1"]["kept"] is True
    # By default glibc maps a 64 MB block afresh every time (above its largest adaptive
    # threshold, 32 MB); kept, the heap holds it. A whole model frame's counts are not asserted:
    # below 32 MB glibc's thresholds adapt to the allocation history, so they vary from run to
    # run (benchmarks/run.py measures them side by side).
    assert all(n >= 16_000 for n in out["0"]["faults"]), out
    assert all(n < 1_000 for n in out["1"]["faults"][-3:]), out
    np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy"))


def test_warm_up_settles_the_state_before_frame_0_and_is_the_same_in_cli_and_gui(make_tiny_model):
    """Frame 0 runs 4 times before it is labelled (outputs dropped): its embeddings differ
    from a cold start, frames_seen starts at 0, and track_movie and TrackingSession agree."""
    from napari_cosine_tracker.core.inference import EmbeddingStream
    from napari_cosine_tracker.core.pipeline import TrackingSession, track_movie

    movie = make_synthetic_movie(n_frames=6, shape=(64, 64), n_cells=3, seed=2).images
    model_dir = make_tiny_model()
    cold = EmbeddingStream(model_dir, device="cpu").push(movie[0])
    warm_stream = EmbeddingStream(model_dir, device="cpu")
    assert warm_stream.warm_up(movie, 4) == 4 and warm_stream.frames_seen == 0
    warm = warm_stream.push(movie[0])
    assert not np.allclose(cold, warm)
    bad = movie.astype(np.float32)
    bad[0, 0, 0] = np.nan  # an unreadable frame 0: no warm-up, reported at its own turn
    from napari_cosine_tracker.core.io import as_movie

    assert EmbeddingStream(model_dir, device="cpu").warm_up(as_movie(bad), 4) == 0
    a = track_movie(movie, model_dir, device="cpu")
    s = TrackingSession(movie, model_dir, device="cpu", tree_process=False)
    for _ in s.run_model():
        pass
    for _ in s.track():
        pass
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(s.result.labels))


def test_a_long_movie_session_keeps_its_data_on_disk_with_the_same_result(make_tiny_model):
    """Above the memory budget the session's embeddings and tracked frames live in a
    temporary folder (removed with the session): the same cells and tracks as in memory."""
    import gc

    from napari_cosine_tracker.core.pipeline import TrackingSession

    movie = make_synthetic_movie(n_frames=12, shape=(64, 64), n_cells=4, seed=5).images
    model = make_tiny_model()
    results = []
    for budget in (2**40, 0):
        s = TrackingSession(movie, model_dir=model, device="cpu", tree_process=False,
                            memory_budget=budget)
        assert s.on_disk == (budget == 0)
        for _ in s.run_model():
            pass
        for t in range(1, 12):  # live tuning visits many pairs: only the latest are kept
            s.cluster_pair(t)
        assert len(s._pairs) <= s.PAIR_CACHE
        for _ in s.track():
            pass
        labels = s.result.labels
        if budget == 0:
            work = s.work_dir
            assert isinstance(labels, np.memmap) and len(list((work / "embeddings").glob("*.npy"))) == 12
        results.append((np.array(labels), s.result.lineage.copy()))
        del s, labels
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    gc.collect()
    assert not work.exists()  # the temporary folder went with the session

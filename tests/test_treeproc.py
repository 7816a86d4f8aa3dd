"""HDBSCAN trees built in a child process: same result as in-process, survives the child's
death, reports the child's errors, and lets track_movie overlap the model with clustering."""

import numpy as np
import pytest

from napari_cosine_tracker.core.cluster import PairClustering, synthetic_embeddings
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.core.treeproc import TreeProcess, TreeProcessError


@pytest.fixture(scope="module")
def pair():
    m = make_synthetic_movie(n_frames=2, shape=(128, 128), n_cells=6, seed=3)
    return synthetic_embeddings(m.labels, dim=6, seed=3)


@pytest.fixture(scope="module")
def tp():
    proc = TreeProcess()
    yield proc
    proc.close()


def test_child_process_gives_the_in_process_result(pair, tp):
    local = PairClustering(pair[0], pair[1]).run()
    pc = PairClustering(pair[0], pair[1], tree_process=tp)
    pc.prefetch()  # returns before the tree exists
    remote = pc.run()
    assert local.labels_a.max() >= 5
    np.testing.assert_array_equal(remote.labels_a, local.labels_a)
    np.testing.assert_array_equal(remote.labels_b, local.labels_b)
    # a min_samples change rebuilds the tree there too
    np.testing.assert_array_equal(pc.run(min_samples=3).labels_a,
                                  PairClustering(pair[0], pair[1]).run(min_samples=3).labels_a)


def test_a_killed_child_is_restarted(pair, tp):
    expected = PairClustering(pair[0], pair[1], tree_process=tp).run().labels_a
    tp._proc.kill()
    tp._proc.wait()
    np.testing.assert_array_equal(PairClustering(pair[0], pair[1], tree_process=tp).run().labels_a,
                                  expected)


def test_errors_in_the_child_name_the_cause(tp):
    with pytest.raises(TreeProcessError, match="clustering failed in the child process: .*backend"):
        tp.build(np.zeros((10, 3)), 2, backend="no-such-backend")
    # the child keeps serving after an error
    assert tp.build(np.random.default_rng(0).normal(size=(40, 3)), 3).shape == (39, 4)


def test_track_movie_overlapping_model_and_clustering_gives_the_same_result(make_tiny_model):
    from napari_cosine_tracker.core.pipeline import track_movie

    model = make_tiny_model()
    movie = make_synthetic_movie(n_frames=5, shape=(96, 96), n_cells=4, seed=1).images
    plain = track_movie(movie, model, device="cpu")
    overlapped = track_movie(movie, model, device="cpu", overlap=True)
    np.testing.assert_array_equal(overlapped.labels, plain.labels)
    np.testing.assert_array_equal(overlapped.lineage, plain.lineage)


def test_cli_track_overlap_writes_the_same_result(tmp_path, make_tiny_model):
    import tifffile
    import torch

    from napari_cosine_tracker.core.cli import main
    from napari_cosine_tracker.core.io import read_ctc_result

    model = make_tiny_model(seed=1)
    images = tmp_path / "movie.tif"
    tifffile.imwrite(images, make_synthetic_movie(n_frames=4, shape=(96, 96), seed=2).images,
                     photometric="minisblack")
    threads = torch.get_num_threads()
    base = ["track", str(images), "--weights", str(model), "--device", "cpu", "--quiet"]
    try:
        assert main(base + ["-o", str(tmp_path / "a_RES")]) == 0
        assert main(base + ["-o", str(tmp_path / "b_RES"), "--overlap", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    (la, ga), (lb, gb) = read_ctc_result(tmp_path / "a_RES"), read_ctc_result(tmp_path / "b_RES")
    np.testing.assert_array_equal(np.asarray(la[:]), np.asarray(lb[:]))
    np.testing.assert_array_equal(ga, gb)


def test_a_child_that_cannot_start_falls_back_to_this_process(pair, monkeypatch):
    """E.g. a frozen app where ``python -m`` does not work: same labels, with a warning."""
    import sys

    broken = TreeProcess()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    pc = PairClustering(pair[0], pair[1], tree_process=broken)
    with pytest.warns(RuntimeWarning, match="HDBSCAN runs in this process instead"):
        got = pc.run()
    np.testing.assert_array_equal(got.labels_a, PairClustering(pair[0], pair[1]).run().labels_a)
    assert pc.tree_process is None

"""Pair clustering: instances recovered from synthetic embeddings, live re-labelling, errors."""

import numpy as np
import pytest

from napari_cosine_tracker.core.cluster import (
    ClusterParams,
    PairClustering,
    PairResult,
    cluster_pair,
    foreground,
    instance_confidence,
    synthetic_embeddings,
)
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

D = 12


def best_iou(gt, pred):
    """For every true id: the IoU of the predicted instance overlapping it most."""
    out = {}
    for g in np.unique(gt):
        if g == 0:
            continue
        m = gt == g
        v, c = np.unique(pred[m], return_counts=True)
        c = np.where(v == 0, 0, c)
        j = v[np.argmax(c)]
        out[int(g)] = 0.0 if j == 0 else float((m & (pred == j)).sum() / (m | (pred == j)).sum())
    return out


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def embed(frames, dirs, noise=0.03, seed=0):
    """Embeddings with given directions per id (background e_0) plus a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    for lab in frames:
        e = np.asarray(dirs)[lab].transpose(2, 0, 1).astype(float)
        e = e + rng.normal(scale=noise, size=e.shape)
        out.append((e / np.linalg.norm(e, axis=0, keepdims=True)).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def touching():
    """Two touching cells, one apart; each moved by 2 px in frame b."""
    shape = (96, 96)
    frames = []
    for s in (0, 2):
        lab = np.zeros(shape, np.int32)
        lab[disk(shape, 30 + s, 28, 12)] = 1
        lab[disk(shape, 30 + s, 50, 12) & (lab == 0)] = 2  # shares a straight border with 1
        lab[disk(shape, 70, 70 - s, 10)] = 3
        frames.append(lab)
    frames = np.stack(frames)
    emb = synthetic_embeddings(frames, D, seed=1)
    return frames, emb


def test_foreground_threshold():
    e = np.zeros((D, 4, 4), np.float32)
    e[0] = 1
    e[0, 1, 1] = 0.2
    e[1, 1, 1] = np.sqrt(1 - 0.04)
    fg = foreground(e, 0.5)
    assert fg.dtype == bool and fg.sum() == 1 and fg[1, 1]
    with pytest.raises(ValueError, match=r"\(d, Y, X\)"):
        foreground(e[0])


def test_recovers_touching_instances(touching):
    frames, emb = touching
    res = cluster_pair(emb[0], emb[1])
    assert isinstance(res, PairResult)
    for gt, pred in zip(frames, (res.labels_a, res.labels_b)):
        ious = best_iou(gt, pred)
        assert min(ious.values()) > 0.85, ious
        assert len(np.unique(pred)) - 1 == 3
    # Same cell in both frames = same id; the links say so too.
    for g in (1, 2, 3):
        ida = np.bincount(res.labels_a[frames[0] == g]).argmax()
        idb = np.bincount(res.labels_b[frames[1] == g]).argmax()
        assert ida == idb
        assert (ida, idb) in set(map(tuple, res.links.tolist()))
    assert res.labels_a.dtype == np.int32 and res.labels_a.shape == frames[0].shape
    assert 0 <= res.prob_a.min() and res.prob_a.max() <= 1
    assert (res.prob_a[res.labels_a == 0] == 0).all()
    assert res.prob_a[res.labels_a > 0].mean() > 0.5
    conf = instance_confidence(res.labels_a, res.prob_a)
    assert set(conf) == set(np.unique(res.labels_a[res.labels_a > 0]).tolist())
    assert all(0 < v <= 1 for v in conf.values())
    with pytest.raises(ValueError, match="shape"):
        instance_confidence(res.labels_a, res.prob_a[:-1])


def test_same_direction_far_apart_not_linked_thanks_to_coordinates():
    """A cell in frame a and another one, with the same direction, far away in frame b."""
    shape = (96, 128)
    a = np.zeros(shape, np.int32)
    b = np.zeros(shape, np.int32)
    a[disk(shape, 48, 24, 11)] = 1
    b[disk(shape, 48, 104, 11)] = 1  # the same direction, 80 px away
    a[disk(shape, 20, 64, 9)] = 2  # an unrelated cell that stays put
    b[disk(shape, 21, 64, 9)] = 2
    dirs = np.zeros((3, D))
    dirs[0, 0] = 1
    dirs[1] = unit(np.r_[0, 1, 1, np.zeros(D - 3)])
    dirs[2] = unit(np.r_[0, 0, 0, 1, np.zeros(D - 4)])
    ea, eb = embed([a, b], dirs, seed=3)
    res = cluster_pair(ea, eb)
    left = np.bincount(res.labels_a[a == 1]).argmax()
    right = np.bincount(res.labels_b[b == 1]).argmax()
    assert left > 0 and right > 0
    assert left != right
    assert not any(x == left and y == right for x, y in res.links.tolist())
    stay_a = np.bincount(res.labels_a[a == 2]).argmax()
    stay_b = np.bincount(res.labels_b[b == 2]).argmax()
    assert stay_a == stay_b > 0
    # Without the coordinates (huge coord_scale) the two would be one cluster: a false link.
    res_nc = cluster_pair(ea, eb, coord_scale=1e6)
    left = np.bincount(res_nc.labels_a[a == 1]).argmax()
    right = np.bincount(res_nc.labels_b[b == 1]).argmax()
    assert (left, right) in set(map(tuple, res_nc.links.tolist()))


def test_same_direction_cells_in_one_frame_are_separate_instances():
    shape = (80, 120)
    lab = np.zeros(shape, np.int32)
    lab[disk(shape, 40, 30, 12)] = 1
    lab[disk(shape, 40, 90, 12)] = 2
    dirs = np.zeros((3, D))
    dirs[0, 0] = 1
    dirs[1] = dirs[2] = unit(np.r_[0, 1, -1, np.zeros(D - 3)])
    ea, eb = embed([lab, lab], dirs, seed=4)
    res = cluster_pair(ea, eb)
    for pred in (res.labels_a, res.labels_b):
        ious = best_iou(lab, pred)
        assert min(ious.values()) > 0.85
        assert np.bincount(pred[lab == 1]).argmax() != np.bincount(pred[lab == 2]).argmax()


@pytest.fixture(scope="module")
def movie_pair():
    m = make_synthetic_movie(n_frames=2, shape=(192, 192), n_cells=30, radius=(8, 13), seed=5,
                             divisions=False)
    return m.labels.astype(np.int32), synthetic_embeddings(m.labels, D, seed=6)


def test_synthetic_movie_pair_segmentation(movie_pair):
    labels, emb = movie_pair
    res = cluster_pair(emb[0], emb[1])
    for gt, pred in zip(labels, (res.labels_a, res.labels_b)):
        ious = np.array(list(best_iou(gt, pred).values()))
        assert (ious > 0.5).mean() >= 0.95, ious
        assert ious.mean() > 0.85


def test_relabel_matches_clustering_from_scratch(movie_pair):
    _, emb = movie_pair
    pc = PairClustering(emb[0], emb[1], ClusterParams(min_cluster_size=40))
    pc.run()
    tree = pc._tree
    for mcs in (400, 120, 40):
        live = pc.run(min_cluster_size=mcs, min_object_size=20)
        assert pc._tree is tree, "min_cluster_size must not rebuild the tree"
        scratch = cluster_pair(emb[0], emb[1], ClusterParams(min_cluster_size=mcs,
                                                             min_object_size=20))
        np.testing.assert_array_equal(live.labels_a, scratch.labels_a)
        np.testing.assert_array_equal(live.labels_b, scratch.labels_b)
        np.testing.assert_array_equal(live.links, scratch.links)
        np.testing.assert_allclose(live.prob_b, scratch.prob_b)
    # A min_samples change rebuilds the tree (and still equals a fresh run).
    live = pc.run(min_samples=4)
    assert pc._tree is not tree
    scratch = cluster_pair(emb[0], emb[1], pc.params)
    np.testing.assert_array_equal(live.labels_b, scratch.labels_b)


def test_drop_pieces_under_only_ever_removes_objects(movie_pair):
    """'Drop pieces under' (min_object_size) is the setting that does what a biologist
    expects of a size filter: raising it removes objects and never adds or cuts any."""
    _, emb = movie_pair
    pc = PairClustering(emb[0], emb[1], ClusterParams(min_cluster_size=40))
    def objects(labels):  # each object as its set of pixels (ids may be renumbered)
        return {frozenset(np.flatnonzero(labels == i).tolist())
                for i in np.unique(labels) if i}

    before, counts = None, []
    for size in (0, 20, 60, 150, 400):
        now = objects(pc.run(min_object_size=size).labels_b)
        if before is not None:
            assert now <= before  # only removals: no new object, none cut or grown
        before = now
        counts.append(len(now))
    assert counts[-1] < counts[0]


def test_grid_subsampling_agrees_with_every_pixel(movie_pair):
    labels, emb = movie_pair
    grid = cluster_pair(emb[0], emb[1], ClusterParams(grid_step=3))
    full = cluster_pair(emb[0], emb[1], ClusterParams(grid_step=1, max_points=None))
    assert grid.step == 3 and full.step == 1 and full.n_points > 5 * grid.n_points
    for gt, g, f in zip(labels, (grid.labels_a, grid.labels_b), (full.labels_a, full.labels_b)):
        ig = np.array(list(best_iou(gt, g).values()))
        i_f = np.array(list(best_iou(gt, f).values()))
        assert ig.mean() >= i_f.mean() - 0.03
        assert ig.mean() > 0.85


def test_backends_agree(touching):
    frames, emb = touching
    a = cluster_pair(emb[0], emb[1], backend="hdbscan")
    b = cluster_pair(emb[0], emb[1], backend="fast_hdbscan")
    ious = best_iou(a.labels_b, b.labels_b)
    assert min(ious.values()) > 0.95


def test_max_points_coarsens_grid(movie_pair):
    _, emb = movie_pair
    res = cluster_pair(emb[0], emb[1], ClusterParams(grid_step=1, max_points=2000))
    assert res.n_points <= 2000 and res.step > 1


def test_empty_and_single_cell_pairs():
    e = np.zeros((D, 40, 40), np.float32)
    e[0] = 1
    res = cluster_pair(e, e)
    assert res.labels_a.max() == 0 and res.links.shape == (0, 2)
    lab = disk((40, 40), 20, 20, 9).astype(np.int32)
    emb = synthetic_embeddings(np.stack([lab, lab]), D, seed=0)
    res = cluster_pair(emb[0], emb[1])
    assert len(np.unique(res.labels_a)) == 2 and len(np.unique(res.labels_b)) == 2
    assert best_iou(lab, res.labels_a)[1] > 0.85


@pytest.mark.parametrize(
    "kw, word",
    [
        (dict(min_samples=0), "min_samples"),
        (dict(min_cluster_size=1), "min_cluster_size"),
        (dict(min_cluster_size=2.5), "min_cluster_size"),
        (dict(coord_scale=0), "coord_scale"),
        (dict(coord_scale=float("nan")), "coord_scale"),
        (dict(fg_threshold=1.5), "fg_threshold"),
        (dict(grid_step=0), "grid_step"),
        (dict(max_points=3), "max_points"),
        (dict(smoothing=-1), "smoothing"),
        (dict(backend="sklearn"), "backend"),
    ],
)
def test_bad_params_are_named(kw, word):
    with pytest.raises(ValueError, match=word):
        ClusterParams(**kw)


def test_bad_inputs_are_explained(touching):
    _, emb = touching
    with pytest.raises(ValueError, match="same shape"):
        PairClustering(emb[0], emb[1][:, :-1])
    with pytest.raises(ValueError, match=r"\(d, Y, X\)"):
        PairClustering(emb[0][0], emb[1][0])
    with pytest.raises(ValueError, match="float"):
        PairClustering(emb[0].astype(int), emb[1].astype(int))
    with pytest.raises(TypeError, match="min_cluster_sise"):
        PairClustering(emb[0], emb[1]).run(min_cluster_sise=3)

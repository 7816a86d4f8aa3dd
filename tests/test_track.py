"""Tracking: lineage from pair clusterings and from plain IoU linking, CTC consistency."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cosine_tracker.core.cluster import cluster_pair, synthetic_embeddings
from napari_cosine_tracker.core.io import check_lineage
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.core.track import (
    Tracker,
    TrackParams,
    link_frames,
    match_instances,
    track_pairs,
)


# ----------------------------------------------------------------------------- helpers


def majority(gt, mask):
    v = gt[mask]
    v = v[v > 0]
    if v.size == 0:
        return 0
    u, c = np.unique(v, return_counts=True)
    return int(u[np.argmax(c)]) if c.max() > 0.5 * mask.sum() else 0


def division_f1(gt_labels, gt_lineage, tracked, lineage):
    """F1 of divisions: a predicted division is right when its mother (frame t-1) and at
    least two daughters (frame t) lie on a true mother and two of her true daughters. True
    mothers with fewer than two visible daughters are not divisions one can find."""
    gt_parent = {int(r[0]): int(r[3]) for r in gt_lineage}
    kids = {}
    for r in gt_lineage:
        if r[3] > 0:
            kids.setdefault(int(r[3]), []).append(int(r[0]))
    gt_div = {m for m, k in kids.items() if len(k) >= 2}
    pk = {}
    for r in lineage:
        if r[3] > 0:
            pk.setdefault(int(r[3]), []).append(r)
    tp, n_pred = set(), 0
    for mom, ds in pk.items():
        if len(ds) < 2:
            continue
        n_pred += 1
        t = int(ds[0][1])
        gm = majority(gt_labels[t - 1], tracked[t - 1] == mom)
        gd = {majority(gt_labels[t], tracked[t] == d[0]) for d in ds}
        if gm in gt_div and sum(gt_parent.get(g, 0) == gm for g in gd if g) >= 2:
            tp.add(gm)
    p = len(tp) / max(n_pred, 1)
    r = len(tp) / max(len(gt_div), 1)
    return 2 * p * r / max(p + r, 1e-9), len(gt_div)


def id_switches(gt_labels, tracked):
    """Links of true tracks (same true id in t and t+1), counted as ``[switches, links]``:
    both ends detected but with different predicted ids; separately for cells that touch
    another cell. ``missed`` counts links with an end not detected (e.g. a sliver of a cell
    at the border)."""
    sw = {"all": [0, 0], "touching": [0, 0], "missed": [0, 0]}
    for t in range(len(gt_labels) - 1):
        g0, g1 = gt_labels[t], gt_labels[t + 1]
        for g in np.intersect1d(np.unique(g0[g0 > 0]), np.unique(g1[g1 > 0])):
            a, b = majority(tracked[t], g0 == g), majority(tracked[t + 1], g1 == g)
            sw["missed"][1] += 1
            if a == 0 or b == 0:
                sw["missed"][0] += 1
                continue
            m = g0 == g
            touch = ((g0 > 0) & (g0 != g) & ndi.binary_dilation(m)).any()
            for k in ("all", "touching") if touch else ("all",):
                sw[k][1] += 1
                sw[k][0] += int(a != b)
    return sw


def check_ctc_consistency(tracked, lineage):
    """Ids match the lineage; tracks are contiguous; parents end right before daughters."""
    assert lineage.dtype == np.int64 and lineage.shape[1] == 4
    ids = set(np.unique(tracked).tolist()) - {0}
    assert ids == set(lineage[:, 0].tolist())
    rows = {int(r[0]): r for r in lineage}
    present = {i: [] for i in ids}
    for t, fr in enumerate(tracked):
        for i in np.unique(fr[fr > 0]).tolist():
            present[i].append(t)
    for i, r in rows.items():
        assert present[i] == list(range(r[1], r[2] + 1)), f"track {i} is not contiguous"
        if r[3]:
            assert r[3] in rows, f"parent {r[3]} of {i} is missing"
            assert rows[r[3]][2] == r[1] - 1, f"parent {r[3]} must end right before {i}"
    presence = {t: np.unique(fr[fr > 0]).tolist() for t, fr in enumerate(tracked)}
    assert check_lineage(lineage, presence, len(tracked)) == []
    daughters = {}
    for r in lineage:
        if r[3]:
            daughters.setdefault(int(r[3]), []).append(int(r[0]))
    assert all(len(v) >= 2 for v in daughters.values()), "a division needs two daughters"


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def movie_and_pairs():
    m = make_synthetic_movie(n_frames=16, shape=(160, 160), n_cells=10, radius=(8, 13), seed=1,
                             division_rate=0.1)
    emb = synthetic_embeddings(m.labels, 12, seed=101)
    pairs = [cluster_pair(emb[t], emb[t + 1]) for t in range(len(emb) - 1)]
    return m, pairs


# ----------------------------------------------------------------------------- method


@pytest.mark.parametrize("mode", ["second", "first"])
def test_pair_tracking_recovers_lineage(movie_and_pairs, mode):
    m, pairs = movie_and_pairs
    tracked, lineage = track_pairs(pairs, TrackParams(frame_segmentation=mode))
    assert tracked.shape == m.labels.shape and tracked.dtype == np.int32
    check_ctc_consistency(tracked, lineage)
    f1, n_div = division_f1(m.labels, m.lineage, tracked, lineage)
    assert n_div >= 3
    assert f1 >= 0.8
    sw = id_switches(m.labels, tracked)
    assert sw["touching"][1] >= 20, "the movie should have touching cells"
    assert sw["all"][0] <= 0.02 * sw["all"][1], sw
    assert sw["touching"][0] <= 0.03 * sw["touching"][1], sw
    assert sw["missed"][0] <= 0.05 * sw["missed"][1], sw
    assert lineage[:, 0].tolist() == list(range(1, len(lineage) + 1))


def test_streaming_tracker_emits_final_frames_in_order(movie_and_pairs):
    m, pairs = movie_and_pairs
    p = TrackParams(min_track_length=3)
    tr = Tracker(p)
    got, pending_max = [], 0
    for k, pr in enumerate(pairs):
        got += tr.add_pair(pr)
        # Frames k+1 were seen; at most min_track_length of them may wait.
        pending_max = max(pending_max, (k + 2) - len(got))
    got += tr.finish()
    assert [t for t, _ in got] == list(range(len(pairs) + 1))
    assert pending_max <= p.min_track_length
    stream = np.stack([lab for _, lab in got])
    tracked, lineage = track_pairs(pairs, p)
    # Same tracks up to the renumbering.
    lin = tr.lineage()
    assert len(lin) == len(lineage)
    for a, b in zip(stream, tracked):
        assert ((a > 0) == (b > 0)).all()
        pairs_ab = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
        assert len(pairs_ab) == len({x for x, _ in pairs_ab})
    with pytest.raises(RuntimeError, match="finish"):
        tr.add_pair(pairs[0])


def test_link_frames_on_ground_truth_is_exact(movie_and_pairs):
    m, _ = movie_and_pairs
    tracked, lineage = link_frames(m.labels)
    check_ctc_consistency(tracked, lineage)
    f1, _ = division_f1(m.labels, m.lineage, tracked, lineage)
    assert f1 == 1.0
    sw = id_switches(m.labels, tracked)
    assert sw["all"][0] == 0 and sw["missed"][0] == 0


# ----------------------------------------------------------------------------- rules


def _movie(specs, shape=(64, 64), T=None):
    """Label movie from {frame: [(id, cy, cx, r), ...]}."""
    T = T or (max(specs) + 1)
    out = np.zeros((T,) + shape, np.int32)
    for t, cells in specs.items():
        for i, cy, cx, r in cells:
            out[t][disk(shape, cy, cx, r) & (out[t] == 0)] = i
    return out


def test_division_from_pair_links_and_parent_consistency():
    f0 = _movie({0: [(1, 32, 32, 10)]})[0]
    f1 = _movie({0: [(4, 32, 26, 7), (5, 32, 39, 7)]})[0]  # a division: new ids in frame b
    f2 = _movie({0: [(4, 32, 25, 7), (5, 32, 40, 7)]})[0]
    # Pair (0, 1): mother and both daughters in one cluster -> links (1, 4), (1, 5).
    pairs = [(f0, f1, [(1, 4), (1, 5)]), (f1, f2)]
    tracked, lineage = track_pairs(pairs, TrackParams(overlap_threshold=1.0))
    check_ctc_consistency(tracked, lineage)
    assert lineage.tolist() == [[1, 0, 0, 0], [2, 1, 2, 1], [3, 1, 2, 1]]
    # Daughters in clusters of their own: found by their overlap with the mother.
    tracked, lineage = track_pairs([(f0, f1, np.zeros((0, 2))), (f1, f2)])
    assert lineage.tolist() == [[1, 0, 0, 0], [2, 1, 2, 1], [3, 1, 2, 1]]
    # ... unless that is switched off: then they are new tracks.
    _, lineage = track_pairs([(f0, f1, np.zeros((0, 2))), (f1, f2)],
                             TrackParams(overlap_threshold=1.0))
    assert (lineage[:, 3] == 0).all()


def test_shared_frame_matching_carries_ids():
    """Frame 1 is segmented with other ids in pair (1, 2): the IoU on frame 1 links them."""
    a = _movie({0: [(1, 20, 20, 8), (2, 44, 44, 8)]})[0]
    b = _movie({0: [(1, 21, 21, 8), (2, 44, 43, 8)]})[0]
    b_again = np.where(b == 1, 7, np.where(b == 2, 9, 0)).astype(np.int32)  # other ids
    c = np.where(b_again > 0, b_again, 0)
    c = np.roll(c, 1, axis=1)
    tracked, lineage = track_pairs([(a, b), (b_again, c)])
    check_ctc_consistency(tracked, lineage)
    assert len(lineage) == 2 and (lineage[:, 2] == 2).all()
    assert majority(tracked[2], c == 7) == majority(tracked[0], a == 1)


def test_short_tracks_are_removed_and_lonely_daughter_continues_mother():
    specs = {
        0: [(1, 20, 20, 8)],
        1: [(1, 20, 21, 8), (2, 50, 50, 5)],  # 2: a one-frame speck mid-movie
        2: [(1, 20, 22, 8)],
        3: [(3, 20, 17, 5), (4, 20, 28, 5)],  # 1 divides
        4: [(3, 20, 16, 5)],  # 4 lives one frame only: no division after all
        5: [(3, 20, 15, 5)],
    }
    movie = _movie(specs)
    tracked, lineage = link_frames(movie, TrackParams(iou_threshold=0.2))
    check_ctc_consistency(tracked, lineage)
    assert lineage.tolist() == [[1, 0, 5, 0]]
    assert tracked[1][50, 50] == 0
    tracked, lineage = link_frames(movie, TrackParams(iou_threshold=0.2, min_track_length=1))
    check_ctc_consistency(tracked, lineage)
    assert len(lineage) == 4 and (lineage[:, 3] > 0).sum() == 2


def test_interrupted_track_gets_a_new_id_and_ends_are_kept():
    specs = {0: [(1, 20, 20, 8)], 1: [(1, 20, 20, 8)], 3: [(1, 20, 20, 8)],
             4: [(1, 20, 20, 8), (2, 50, 50, 6)]}  # 2 appears in the last frame only
    movie = _movie(specs, T=5)
    tracked, lineage = link_frames(movie)
    check_ctc_consistency(tracked, lineage)
    assert lineage.tolist() == [[1, 0, 1, 0], [2, 3, 4, 0], [3, 4, 4, 0]]


def test_match_instances():
    a = _movie({0: [(3, 20, 20, 8), (5, 44, 44, 8)]})[0]
    b = _movie({0: [(7, 21, 20, 8), (8, 44, 39, 4), (9, 44, 49, 4)]})[0]
    m = match_instances(a, b, 0.3, 0.5)
    rows = {(int(r[0]), int(r[1])) for r in m}
    assert (3, 7) in rows and m[0, 2] > 0.8
    assert (5, 8) in rows and (5, 9) in rows
    assert len(match_instances(a, np.zeros_like(a))) == 0


@pytest.mark.parametrize(
    "kw, word",
    [
        (dict(iou_threshold=0), "iou_threshold"),
        (dict(iou_threshold=1.5), "iou_threshold"),
        (dict(overlap_threshold=-1), "overlap_threshold"),
        (dict(min_track_length=0), "min_track_length"),
        (dict(min_track_length=2.0), "min_track_length"),
        (dict(frame_segmentation="last"), "frame_segmentation"),
        (dict(unmerge_frames=-1), "unmerge_frames"),
        (dict(min_daughter_ratio=1.0), "min_daughter_ratio"),
        (dict(min_daughter_ratio=-0.1), "min_daughter_ratio"),
    ],
)
def test_bad_params_are_named(kw, word):
    with pytest.raises(ValueError, match=word):
        TrackParams(**kw)


def test_bad_inputs_are_explained():
    a = np.zeros((8, 8), np.int32)
    with pytest.raises(ValueError, match="same 2-D shape"):
        Tracker().add_pair((a, np.zeros((8, 9), np.int32)))
    with pytest.raises(ValueError, match="integer"):
        Tracker().add_pair((a.astype(float), a.astype(float)))
    with pytest.raises(ValueError, match="negative"):
        Tracker().add_pair((a - 1, a))
    with pytest.raises(TypeError, match="PairResult"):
        Tracker().add_pair(3)
    with pytest.raises(ValueError, match="at least one pair"):
        track_pairs([])
    with pytest.raises(ValueError, match="frame 1"):
        link_frames([a, np.zeros((9, 8), np.int32)])
    tr = Tracker()
    tr.add_pair((a, a))
    with pytest.raises(ValueError, match="shape"):
        tr.add_pair((np.zeros((9, 9), np.int32),) * 2)


def test_division_whose_daughters_both_vanish_is_no_division():
    specs = {t: [(9, 50, 50, 6)] for t in range(6)}
    for t in range(3):
        specs[t] = [(1, 20, 20, 8)] + specs[t]
    specs[3] = [(3, 20, 17, 5), (4, 20, 28, 5)] + specs[3]  # both gone in frame 4
    tracked, lineage = link_frames(_movie(specs), TrackParams(iou_threshold=0.2))
    check_ctc_consistency(tracked, lineage)
    assert (lineage[:, 3] == 0).all()
    assert sorted(lineage[:, 1:3].tolist()) == [[0, 3], [0, 5]]


def test_merge_then_split_is_not_a_division():
    """Two touching cells segmented as one for a frame, then apart again."""
    shape = (64, 64)
    frames = []
    for t in range(5):
        lab = np.zeros(shape, np.int32)
        if t == 2:
            lab[disk(shape, 32, 25, 8) | disk(shape, 32, 39, 8)] = 1  # one merged instance
        else:
            lab[disk(shape, 32, 25, 8)] = 1
            lab[disk(shape, 32, 39, 8) & (lab == 0)] = 2
        frames.append(lab)
    tracked, lineage = link_frames(frames)
    check_ctc_consistency(tracked, lineage)
    assert (lineage[:, 3] == 0).all(), lineage
    left = [majority(tracked[t], disk(shape, 32, 22, 4)) for t in range(5)]
    assert len(set(left)) == 1  # the cell that kept the merged instance keeps its id
    # Without the rule the split reads as a division.
    _, lineage = link_frames(frames, TrackParams(unmerge_frames=0))
    assert (lineage[:, 3] > 0).sum() == 2


def test_small_fragment_breaking_off_is_not_a_division():
    """A cell that splits into a large piece and a small one (a segmentation fragment) keeps
    its track on the large piece; two pieces of about equal size are a division."""
    def movie(small_r):
        specs = {t: [(1, 32, 30, 10)] for t in range(3)}
        for t in range(3, 6):  # both pieces overlap the mother's footprint
            specs[t] = [(2, 32, 28, 9), (3, 32, 39, small_r)] if small_r < 9 else [(2, 32, 25, 7), (3, 32, 36, 7)]
        return _movie(specs)

    fragment = movie(3)  # areas about 1:9
    tracked, lineage = link_frames(fragment, TrackParams(iou_threshold=0.2, overlap_threshold=0.3))
    check_ctc_consistency(tracked, lineage)
    assert (lineage[:, 3] == 0).all(), lineage
    big = [majority(tracked[t], disk((64, 64), 32, 28, 4)) for t in range(6)]
    assert len(set(big)) == 1  # the large piece continues the mother's track
    # Counting every split as a division brings the fragment back as a daughter.
    _, lineage = link_frames(fragment, TrackParams(iou_threshold=0.2, overlap_threshold=0.3,
                                                   min_daughter_ratio=0))
    assert (lineage[:, 3] > 0).sum() == 2
    # Equal daughters are a division with the default.
    _, lineage = link_frames(movie(9), TrackParams(iou_threshold=0.2, overlap_threshold=0.3))
    assert (lineage[:, 3] > 0).sum() == 2, lineage


def test_keep_ids_gives_unchanged_cells_their_tracks_ids():
    from napari_cosine_tracker.core.track import keep_ids

    ref = np.zeros((2, 20, 20), np.int32)
    ref[:, 2:8, 2:8] = 7          # a track seen in both frames
    ref[1, 12:18, 12:18] = 9      # a track starting in the later frame
    pair = np.zeros_like(ref)
    pair[:, 2:8, 2:8] = 1         # the same cell
    pair[1, 12:18, 12:14] = 2     # cell 9 cut in two by the new settings
    pair[1, 12:18, 14:18] = 3
    pair[0, 14:16, 2:4] = 4       # a speck no track had
    a, b, nxt = keep_ids(pair[0], pair[1], ref[0], ref[1], next_id=10)
    assert (a[2:8, 2:8] == 7).all() and (b[2:8, 2:8] == 7).all()
    # the larger piece is still cell 9 (IoU 2/3); the smaller one and the speck are new
    assert (b[12:18, 14:18] == 9).all() and (b[12:18, 12:14] == 10).all()
    assert (a[14:16, 2:4] == 11).all()
    assert nxt == 12 and ((a == 0) == (pair[0] == 0)).all()

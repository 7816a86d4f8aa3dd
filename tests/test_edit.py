"""TrackEditor: every action with undo/redo, random action sequences, project files."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_cosine_tracker.core.edit import (
    TrackEditor,
    check_consistency,
    default_project_path,
    lineage_from_labels,
)
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

T, H, W = 6, 48, 48


def disc(cy, cx, r, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def scene():
    """Track 1 moves right (0..5); 2 (0..2) divides into 3 and 4 (3..5); 5 lives 1..4."""
    lab = np.zeros((T, H, W), np.uint16)
    for t in range(T):
        lab[t][disc(10, 8 + 2 * t, 5)] = 1
        if t <= 2:
            lab[t][disc(34, 14, 7)] = 2
        else:
            lab[t][disc(30, 10, 4)] = 3
            lab[t][disc(38, 18, 4)] = 4
        if 1 <= t <= 4:
            lab[t][disc(34, 38, 5)] = 5
    lin = np.array([[1, 0, 5, 0], [2, 0, 2, 0], [3, 3, 5, 2], [4, 3, 5, 2], [5, 1, 4, 0]], np.int64)
    return lab, lin


def row(ed, i):
    m = ed.lineage
    r = m[m[:, 0] == i]
    return tuple(r[0, 1:]) if len(r) else None


def state(ed):
    return ed.labels.copy(), ed.lineage


def same(a, b):
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.fixture
def ed():
    lab, lin = scene()
    e = TrackEditor(lab, lin)
    assert e.check() == []
    return e


def undo_redo_roundtrip(ed, before):
    """Undo restores ``before`` exactly, redo gives the edited state back."""
    after = state(ed)
    assert ed.check() == []
    assert ed.undo()
    assert same(state(ed), before)
    assert ed.redo()
    assert same(state(ed), after)
    assert ed.check() == []


# ---------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------


def test_construction_checks_and_repairs():
    lab, lin = scene()
    bad = lin.copy()
    bad[4, 2] = 3  # row says 1..3, label 5 is in 1..4
    with pytest.raises(ValueError, match="inconsistent.*repair=True"):
        TrackEditor(lab, bad)
    lab2 = lab.copy()
    lab2[2][lab2[2] == 1] = 0  # track 1 skips frame 2
    fixed = TrackEditor(lab2, lin, repair=True)
    assert fixed.check() == []
    assert row(fixed, 1) == (0, 1, 0)
    new = fixed.lineage[-1]
    assert tuple(new[1:]) == (3, 5, 1)  # the later piece is gap-linked to the earlier
    assert (fixed.labels[3:][lab2[3:] == 1] == new[0]).all()
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        TrackEditor(lab[0])
    ed = TrackEditor(lab)  # lineage derived from labels, no parents
    assert ed.lineage[:, 3].tolist() == [0] * 5
    assert np.array_equal(lineage_from_labels(lab)[:, :3], lin[:, :3])


def test_labels_are_read_only_and_a_copy(ed):
    lab, _ = scene()
    with pytest.raises(ValueError):
        ed.labels[0, 0, 0] = 3
    ed.delete_cell(0, 1)
    assert (lab[0] == 1).any()  # the caller's array is untouched


# ---------------------------------------------------------------------------------------
# actions, each with undo + redo
# ---------------------------------------------------------------------------------------


def test_delete_cell_middle_splits_track_with_gap_link(ed):
    before = state(ed)
    ed.delete_cell(2, 1)
    assert not (ed.labels[2] == 1).any()
    assert row(ed, 1) == (0, 1, 0)
    new = int(ed.lineage[-1, 0])
    assert row(ed, new) == (3, 5, 1)
    assert ed.history == ["Delete cell 1 in frame 2"]
    undo_redo_roundtrip(ed, before)


def test_delete_cell_at_end_shortens_track_and_keeps_daughters(ed):
    before = state(ed)
    ed.delete_cell(2, 2)
    assert row(ed, 2) == (0, 1, 0)
    assert row(ed, 3) == (3, 5, 2) and row(ed, 4) == (3, 5, 2)
    undo_redo_roundtrip(ed, before)
    with pytest.raises(ValueError, match="no cell in frame 0"):
        ed.delete_cell(0, 5)


def test_paint_new_cell_extend_and_repaint(ed):
    before = state(ed)
    new = ed.paint_cell(0, disc(40, 40, 3))
    assert row(ed, new) == (0, 0, 0)
    assert (ed.labels[0] == new).sum() == disc(40, 40, 3).sum()
    undo_redo_roundtrip(ed, before)

    mid = state(ed)
    assert ed.paint_cell(5, disc(34, 38, 5), 5) == 5  # extend track 5 by one frame
    assert row(ed, 5) == (1, 5, 0)
    undo_redo_roundtrip(ed, mid)

    mid = state(ed)
    ed.paint_cell(3, disc(34, 38, 2), 5)  # repaint: the cell becomes exactly the mask
    assert (ed.labels[3] == 5).sum() == disc(34, 38, 2).sum()
    assert ed.history[-1] == "Repaint cell 5 in frame 3"
    undo_redo_roundtrip(ed, mid)

    mid = state(ed)
    ed.paint_cell(3, disc(34, 44, 3), 5, replace=False)  # add to the cell
    assert (ed.labels[3] == 5).sum() > disc(34, 38, 2).sum()
    undo_redo_roundtrip(ed, mid)


def test_paint_without_overwrite_keeps_other_cells(ed):
    big = disc(10, 8, 9)
    n1 = (ed.labels[0] == 1).sum()
    new = ed.paint_cell(0, big, overwrite=False)
    assert (ed.labels[0] == 1).sum() == n1
    assert (ed.labels[0] == new).sum() == (big & (scene()[0][0] == 0)).sum()
    ed.undo()
    # Overwriting may swallow a whole cell: its track shrinks consistently.
    new = ed.paint_cell(1, big | disc(10, 10, 6))
    assert not (ed.labels[1] == 1).any()
    assert ed.check() == []
    with pytest.raises(ValueError, match="empty"):
        ed.paint_cell(0, np.zeros((H, W), bool))
    with pytest.raises(ValueError, match="frame shape"):
        ed.paint_cell(0, np.ones((3, 3), bool))


def test_merge_cells(ed):
    before = state(ed)
    a3, a4 = (ed.labels[3] == 3).sum(), (ed.labels[3] == 4).sum()
    ed.merge_cells(3, 4, 3)
    assert not (ed.labels[3] == 3).any()
    assert (ed.labels[3] == 4).sum() >= a3 + a4
    assert row(ed, 3) == (4, 5, 2)  # still a daughter of 2 (now a gap link)
    undo_redo_roundtrip(ed, before)
    with pytest.raises(ValueError, match="itself"):
        ed.merge_cells(3, 4, 4)


def test_split_cell_by_line(ed):
    before = state(ed)
    area = (ed.labels[1] == 2).sum()
    new = ed.split_cell(1, 2, line=[(30, 14), (38, 14)])  # a vertical cut through the centre
    a, b = (ed.labels[1] == 2).sum(), (ed.labels[1] == new).sum()
    assert a + b == area and min(a, b) > 0.35 * area
    assert row(ed, new) == (1, 1, 0) and row(ed, 2) == (0, 2, 0)
    xs_new = np.nonzero(ed.labels[1] == new)[1]
    xs_old = np.nonzero(ed.labels[1] == 2)[1]
    assert xs_new.max() <= xs_old.min() + 1 or xs_old.max() <= xs_new.min() + 1
    assert "by a line" in ed.history[-1]
    undo_redo_roundtrip(ed, before)
    with pytest.raises(ValueError, match="does not cut"):
        ed.split_cell(1, 2, line=[(0, 0), (0, 1)])
    assert ed.history == ["Split cell 2 in frame 1 by a line (new part 6)"]


@pytest.mark.parametrize("method", ["watershed", "kmeans"])
def test_split_elongated_pair_and_pieces(method):
    yy, xx = np.mgrid[:H, :W]
    a = ((yy - 24) / 5) ** 2 + ((xx - 14) / 10) ** 2 <= 1
    b = ((yy - 24) / 6) ** 2 + ((xx - 32) / 9) ** 2 <= 1
    lab = np.zeros((1, H, W), np.uint16)
    lab[0][a | b] = 1
    ed = TrackEditor(lab)
    new = ed.split_cell(0, 1, method=method)
    for ref in (a & ~b, b & ~a):
        iou = max(((ed.labels[0] == k) & ref).sum() / ((ed.labels[0] == k) | ref).sum()
                  for k in (1, new))
        assert iou > 0.8, (method, iou)
    # A cell in two pieces is split along them, whatever the method.
    lab[0] = 0
    lab[0][disc(10, 10, 4) | disc(30, 30, 6) | disc(30, 40, 1)] = 1
    ed = TrackEditor(lab)
    new = ed.split_cell(0, 1, method=method)
    assert np.array_equal(ed.labels[0] == 1, disc(30, 30, 6) | disc(30, 40, 1))
    assert np.array_equal(ed.labels[0] == new, disc(10, 10, 4))


@pytest.mark.parametrize("method", ["watershed", "kmeans"])
def test_split_merged_pair_recovers_the_two_cells(ed, method):
    ed.merge_cells(4, 3, 4)
    before = state(ed)
    new = ed.split_cell(4, 3, method=method)
    lab0, _ = scene()
    # The part that overlaps cell 3 of frame 3 keeps the id 3; the other is the old 4.
    for cell, ref in ((3, lab0[4] == 3), (new, lab0[4] == 4)):
        m = ed.labels[4] == cell
        iou = (m & ref).sum() / (m | ref).sum()
        assert iou > 0.7, (method, cell, iou)
    undo_redo_roundtrip(ed, before)
    with pytest.raises(ValueError, match="already has a cell"):
        ed.split_cell(4, 3, method=method, new_id=1)


def test_cut_and_link_tracks(ed):
    before = state(ed)
    tail = ed.cut_track(3, 1)
    assert row(ed, 1) == (0, 2, 0) and row(ed, tail) == (3, 5, 0)
    assert (ed.labels[3:][before[0][3:] == 1] == tail).all()
    undo_redo_roundtrip(ed, before)
    ed.link_tracks(1, tail)
    assert same(state(ed), before)  # linking the two halves restores the track
    with pytest.raises(ValueError, match="cut frame"):
        ed.cut_track(0, 1)


def test_cut_moves_daughters_to_the_tail(ed):
    tail = ed.cut_track(2, 2)
    assert row(ed, 2) == (0, 1, 0)
    assert row(ed, 3)[2] == tail and row(ed, 4)[2] == tail


def test_reassign_track_to_existing_id(ed):
    before = state(ed)
    with pytest.raises(ValueError, match="use swap_tracks"):
        ed.reassign_track(2, 1, 5)
    # track 5 ends at 4; give it track 1's cells from frame 5 on.
    ed.reassign_track(5, 1, 5)
    assert row(ed, 1) == (0, 4, 0) and row(ed, 5) == (1, 5, 0)
    undo_redo_roundtrip(ed, before)


def test_swap_tracks(ed):
    before = state(ed)
    ed.swap_tracks(2, 1, 5)
    lab0 = before[0]
    for t in range(2, T):
        assert np.array_equal(ed.labels[t] == 5, lab0[t] == 1)
        assert np.array_equal(ed.labels[t] == 1, lab0[t] == 5)
    assert row(ed, 1) == (0, 4, 0) and row(ed, 5) == (1, 5, 0)
    undo_redo_roundtrip(ed, before)


def test_swap_moves_daughters(ed):
    ed.swap_tracks(1, 2, 5)  # 2's tail (1..2) becomes 5, 5's tail (1..4) becomes 2
    assert row(ed, 5) == (1, 2, 0) and row(ed, 2) == (0, 4, 0)
    assert row(ed, 3)[2] == 5 and row(ed, 4)[2] == 5
    assert ed.check() == []


def test_link_with_gap_is_a_parent_link(ed):
    new = ed.paint_cell(0, disc(40, 40, 3))
    before = state(ed)
    ed.link_tracks(new, 5)  # new ends at 0, 5 starts at 1: adjacent -> one track
    assert row(ed, new) == (0, 4, 0) and row(ed, 5) is None
    undo_redo_roundtrip(ed, before)
    ed.undo()
    ed.delete_cell(1, 5)
    ed.link_tracks(new, 5)  # 5 now starts at 2: a CTC gap link
    assert row(ed, 5) == (2, 4, new)
    with pytest.raises(ValueError, match="must end before"):
        ed.link_tracks(5, 1)


def test_mark_and_unmark_division(ed):
    before = state(ed)
    ed.clear_parent(3)
    assert row(ed, 3) == (3, 5, 0)
    undo_redo_roundtrip(ed, before)
    mid = state(ed)
    with pytest.raises(ValueError, match="must end before"):
        ed.set_parent(5, 1)
    assert same(state(ed), mid) and len(ed.history) == 1
    ed.clear_parent(4)
    mid = state(ed)
    ed.mark_division(4, 2)
    assert row(ed, 4) == (3, 5, 2)
    undo_redo_roundtrip(ed, mid)
    with pytest.raises(ValueError, match="no parent"):
        ed.unmark_division(1)


def test_delete_track(ed):
    before = state(ed)
    ed.delete_track(2)
    assert not (ed.labels == 2).any() and row(ed, 2) is None
    assert row(ed, 3) == (3, 5, 0) and row(ed, 4) == (3, 5, 0)
    undo_redo_roundtrip(ed, before)
    with pytest.raises(ValueError, match="does not exist"):
        ed.delete_track(99)


def test_edit_pixels_like_a_brush(ed):
    before = state(ed)
    ys, xs = np.nonzero(disc(10, 8, 5))
    ed.edit_pixels(0, ys, xs, 0, label="Erase")  # erase track 1 in frame 0
    assert row(ed, 1) == (1, 5, 0) and ed.history == ["Erase"]
    undo_redo_roundtrip(ed, before)
    mid = state(ed)
    ys, xs = np.nonzero(disc(40, 40, 3))
    ed.edit_pixels(5, ys, xs, np.full(len(ys), 5))  # extends track 5 (ends at 4)
    assert row(ed, 5) == (1, 5, 0) and ed.history[-1] == f"Edit {len(ys)} pixels in frame 5"
    undo_redo_roundtrip(ed, mid)
    with pytest.raises(ValueError, match="outside the frame"):
        ed.edit_pixels(0, [H], [0], 1)


def test_group_is_one_undo_step(ed, tmp_path):
    before = state(ed)
    events = []
    ed.connect(events.append)
    with ed.group("Fix division"):
        assert ed.in_group
        ed.delete_cell(2, 2)
        new = ed.paint_cell(2, disc(30, 10, 4))
        ed.set_parent(new, 2)
    assert not ed.in_group
    assert ed.history == ["Fix division"] and len(events) == 4
    # views skip the actions' events and redraw once on the group's, which covers them all
    assert [e.kind for e in events] == ["do", "do", "do", "group"]
    assert events[-1].description == "Fix division" and 2 in events[-1].frames
    assert row(ed, new) == (2, 2, 2)
    undo_redo_roundtrip(ed, before)
    folder = ed.save(tmp_path / "g.tracks")
    ed2 = TrackEditor.open(folder)
    assert ed2.history == ["Fix division"] and ed2.undo() and same(state(ed2), before)
    # a failing group leaves nothing behind
    mid = state(ed)
    with pytest.raises(ValueError):
        with ed.group("Bad"):
            ed.delete_cell(0, 1)
            ed.set_parent(1, 5)  # 5 does not end before 1 starts
    assert same(state(ed), mid) and ed.history == ["Fix division"]
    with pytest.raises(RuntimeError, match="inside an edit group"):
        with ed.group("x"):
            ed.undo()


def test_tracks_layer_data_follows_edits(ed):
    data, graph = ed.tracks_data()
    assert graph == {3: [2], 4: [2]}
    lab0, _ = scene()
    assert len(data) == sum(len(np.unique(f)) - 1 for f in lab0)
    r = data[(data[:, 0] == 1) & (data[:, 1] == 2)][0]
    assert r[2:] == pytest.approx([10, 12])  # centre of disc(10, 8 + 2t)
    ed.paint_cell(2, disc(20, 30, 3), 1)
    data, _ = ed.tracks_data()
    r = data[(data[:, 0] == 1) & (data[:, 1] == 2)][0]
    assert r[2:] == pytest.approx([20, 30])
    ed.undo()
    assert np.array_equal(ed.tracks_data()[0], TrackEditor(*scene()).tracks_data()[0])


def test_history_events_and_redo_cleared(ed):
    events = []
    ed.connect(events.append)
    ed.delete_cell(4, 5)
    assert events[-1].kind == "do" and events[-1].frames == (4,) and events[-1].ids == (5,)
    ed.undo()
    assert events[-1].kind == "undo" and ed.can_redo and not ed.can_undo
    assert ed.redo_history == ["Delete cell 5 in frame 4"]
    ed.redo()
    assert events[-1].kind == "redo"
    ed.undo()
    ed.delete_cell(0, 1)  # a new action drops the redo stack
    assert not ed.can_redo and ed.history == ["Delete cell 1 in frame 0"]
    assert not ed.redo()

    def broken(ev):
        raise RuntimeError("view crashed")

    ed.connect(broken)
    ed.delete_cell(1, 1)  # a failing listener does not undo the edit or stop others
    assert events[-1].description == "Delete cell 1 in frame 1"
    ed.disconnect(broken)
    assert broken not in ed.listeners


def test_diffs_are_compact_on_a_long_movie():
    T_, S = 200, 256
    lab = np.zeros((T_, S, S), np.uint16)
    lab[:, 100:120, 100:120] = 1
    lab[:, 10:30, 10:30] = 2
    lab0 = lab.copy()
    ed = TrackEditor(lab, copy=False)  # edits in place
    ed.delete_cell(T_ - 1, 1)
    d = ed._undo[-1].diff
    assert d.frames == (T_ - 1,)
    assert d.nbytes == 2 * 20 * 20 * 2  # one 20x20 box, before + after, uint16
    # A hole in the middle renames the tail (CTC tracks are contiguous): one box per frame.
    ed.delete_cell(100, 1)
    d = ed._undo[-1].diff
    assert d.frames == tuple(range(100, T_ - 1))
    assert d.nbytes == (T_ - 1 - 100) * 2 * 20 * 20 * 2
    ed.paint_cell(50, np.pad(np.ones((5, 5), bool), ((200, S - 205), (200, S - 205))), 2,
                  replace=False)
    assert ed._undo[-1].diff.nbytes < 2 * 2 * 200 * 200  # bounding box of changes only
    while ed.undo():
        pass
    assert np.array_equal(lab, lab0) and ed.check() == []


# ---------------------------------------------------------------------------------------
# random action sequences keep the invariants
# ---------------------------------------------------------------------------------------

OPS = ["delete_cell", "paint", "merge", "split", "reassign", "cut", "swap", "link",
       "set_parent", "clear_parent", "delete_track", "pixels"]


def _pick(seq, k):
    return seq[k % len(seq)] if seq else None


def _run_op(ed, op, a, b, c, d):
    """Carry out one random action; the arguments are chosen from the current state."""
    t = a % T
    ids_t = ed.ids_in_frame(t)
    tracks = [int(i) for i in ed.lineage[:, 0]]
    i = _pick(ids_t, b)
    j = _pick([k for k in ids_t if k != i], c)
    a_id = _pick(tracks, b)
    # mostly pairs that can be linked (a ends before b starts), sometimes any pair
    later = [k for k in tracks if a_id and ed.track(k)[0] > ed.track(a_id)[1]]
    b_id = _pick(later if later and d % 4 else tracks, c)
    if op == "delete_cell" and i:
        ed.delete_cell(t, i)
    elif op == "paint":
        mask = disc(b % H, c % W, 2 + d % 6)
        tid = None if d % 3 == 0 else _pick(tracks, c)
        ed.paint_cell(t, mask, tid, replace=bool(d % 2), overwrite=bool(b % 2))
    elif op == "merge" and i and j:
        ed.merge_cells(t, i, j)
    elif op == "split" and i:
        if d % 3 == 2:
            ys, xs = np.nonzero(ed.labels[t] == i)
            cy = float(ys.mean())
            ed.split_cell(t, i, line=[(cy, xs.min() - 1), (cy, xs.max() + 1)])
        else:
            ed.split_cell(t, i, method=["watershed", "kmeans"][d % 2])
    elif op == "reassign" and i:
        ed.reassign_track(t, i, None if d % 2 else _pick(tracks, c))
    elif op == "cut" and i:
        ed.cut_track(t, i)
    elif op == "swap" and i:
        ed.swap_tracks(t, i, _pick(tracks, c))
    elif op == "link" and tracks:
        ed.link_tracks(a_id, b_id)
    elif op == "set_parent" and tracks:
        ed.set_parent(b_id, a_id)
    elif op == "clear_parent" and tracks:
        ed.clear_parent(_pick(tracks, b))
    elif op == "delete_track" and tracks:
        ed.delete_track(_pick(tracks, b))
    elif op == "group":  # two actions as one undo step; all or nothing
        with ed.group("two edits"):
            _run_op(ed, OPS[b % len(OPS)], a, c, d, b)
            _run_op(ed, OPS[c % len(OPS)], d, a, b, c)
    elif op == "pixels":
        ys, xs = np.nonzero(disc(b % H, c % W, 1 + d % 4))
        ed.edit_pixels(t, ys, xs, 0 if d % 5 == 0 else (_pick(tracks, c) or 1))


_step = st.tuples(st.sampled_from(OPS + ["group"]), *[st.integers(0, 200)] * 4)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_step, min_size=1, max_size=12), seed=st.integers(0, 3))
def test_random_actions_keep_invariants_and_undo_exactly(steps, seed):
    if seed == 0:
        lab, lin = scene()
    else:
        m = make_synthetic_movie(n_frames=T, shape=(H, W), n_cells=4, radius=(5, 8), seed=seed,
                                 enter_rate=0.3, division_rate=0.2)
        lab, lin = m.labels, m.lineage
    ed = TrackEditor(lab, lin)
    start = state(ed)
    for op, a, b, c, d in steps:
        before, n = state(ed), len(ed.history)
        try:
            _run_op(ed, op, a, b, c, d)
        except ValueError:
            # A refused action changes nothing.
            assert same(state(ed), before) and len(ed.history) == n
        problems = ed.check()
        assert problems == [], (op, problems)
        lin_now = ed.lineage
        rows = {r[0]: r for r in lin_now.tolist()}
        for i, f, l, p in lin_now.tolist():
            assert p == 0 or rows[p][2] < f
    end = state(ed)
    with tempfile.TemporaryDirectory() as tmp:  # the project file restores it all
        ed2 = TrackEditor.open(ed.save(os.path.join(tmp, "p.tracks")))
        assert same(state(ed2), end) and ed2.history == ed.history
        while ed2.undo():
            pass
        assert same(state(ed2), start)
    while ed.undo():
        assert ed.check() == []
    assert same(state(ed), start)
    while ed.redo():
        pass
    assert same(state(ed), end)


# ---------------------------------------------------------------------------------------
# review
# ---------------------------------------------------------------------------------------


def test_review_candidates(ed):
    ed.paint_cell(3, disc(20, 40, 2))  # a one-frame track
    ed.paint_cell(2, disc(10, 12, 2), 1)  # area drop of track 1 in frame 2
    lab = ed.labels
    prob = np.ones(lab.shape, float)
    prob[4][lab[4] == 5] = 0.1
    cands = ed.review_candidates(prob)
    reasons = {(c.frame, c.track_id): c.reason for c in cands}
    assert "lasts only 1 frame(s)" in reasons[(3, 6)]
    assert "shrinks" in reasons[(2, 1)] and "grows" in reasons[(3, 1)]
    assert "probability 0.10" in reasons[(4, 5)]
    assert all(a.score >= b.score for a, b in zip(cands, cands[1:]))
    c = next(c for c in cands if c.track_id == 6)
    assert abs(c.y - 20) < 0.5 and abs(c.x - 40) < 0.5
    # a daughter that starts far from her mother (and so jumps within her own track too)
    ed.paint_cell(3, disc(4, 40, 3), 4)
    weak = [c for c in ed.review_candidates() if "from her mother" in c.reason]
    assert [(c.frame, c.track_id) for c in weak] == [(3, 4)]
    assert "check the division at frame 3" in weak[0].reason
    assert ed.review_candidates(limit=2) == ed.review_candidates()[:2]
    # track 5 (1..4) starts and ends mid-movie in the middle of the frame
    ends = {(c.frame, c.track_id, c.reason) for c in ed.review_candidates(border=2)
            if c.score == 0.3}
    assert any(e[:2] == (1, 5) and e[2].startswith("appears away from the border") for e in ends)
    assert any(e[:2] == (4, 5) and e[2].startswith("disappears away from the border") for e in ends)
    assert not any(c.track_id == 5 for c in ed.review_candidates(border=5) if c.score == 0.3)
    assert not any(c.score == 0.3 for c in ed.review_candidates(border=None))


# ---------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------


def test_project_roundtrip_keeps_undo_and_redo(ed, tmp_path):
    start = state(ed)
    ed.delete_cell(2, 1)
    ed.split_cell(1, 2, method="kmeans")
    ed.cut_track(3, 5)
    ed.paint_cell(0, disc(40, 40, 3))
    ed.undo()  # one action on the redo stack
    ed.meta["movie"] = "01"
    folder = ed.save(tmp_path / "01.tracks")
    files = sorted(os.listdir(folder))
    assert len(files) == 2 and files[0].startswith("base-") and files[1] == "state.npz"

    ed2 = TrackEditor.open(folder)
    assert same(state(ed2), state(ed))
    assert ed2.history == ed.history and ed2.redo_history == ed.redo_history
    assert ed2.meta == {"movie": "01"} and ed2.project_path == folder
    assert ed2.redo() and ed.redo()
    assert same(state(ed2), state(ed))
    while ed2.undo():
        pass
    assert same(state(ed2), start)
    while ed2.redo():
        pass
    assert same(state(ed2), state(ed))

    # Autosave rewrites the small state file only; the base labels stay.
    base = folder / files[0]
    mtime = base.stat().st_mtime_ns
    ed2.delete_track(1)
    ed2.autosave()
    assert base.stat().st_mtime_ns == mtime
    ed3 = TrackEditor.open(folder)
    assert ed3.history[-1] == "Delete track 1" and same(state(ed3), state(ed2))

    # After clearing the history the current labels are the new base.
    ed3.clear_history()
    ed3.save()
    files = sorted(os.listdir(folder))
    assert len(files) == 2 and not base.exists()
    ed4 = TrackEditor.open(folder)
    assert ed4.history == [] and same(state(ed4), state(ed2))


def test_save_an_opened_project_elsewhere(ed, tmp_path):
    start = state(ed)
    ed.delete_cell(2, 1)
    a = ed.save(tmp_path / "a.tracks")
    ed2 = TrackEditor.open(a)
    ed2.merge_cells(3, 3, 4)
    b = ed2.save(tmp_path / "b.tracks")  # writes the base there too
    ed3 = TrackEditor.open(b)
    assert same(state(ed3), state(ed2))
    while ed3.undo():
        pass
    assert same(state(ed3), start)


def test_crash_during_save_keeps_the_old_project(ed, tmp_path, monkeypatch):
    folder = ed.save(tmp_path / "p.tracks")
    before = sorted(os.listdir(folder))
    ed.delete_cell(0, 1)
    real = np.savez_compressed
    calls = []

    def crash(f, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the base is written, then the state write fails
            f.write(b"PK\x03\x04 half a zip")
            raise OSError("disk full")
        real(f, **arrays)

    def crash_now(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", crash_now)
    with pytest.raises(OSError, match="disk full"):
        ed.save()
    assert sorted(os.listdir(folder)) == before
    assert TrackEditor.open(folder).history == []

    ed.clear_history()  # needs a new base: a crash between base and state writes
    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        ed.save()
    monkeypatch.undo()
    reopened = TrackEditor.open(folder)  # the old state still finds its old base
    assert reopened.history == [] and (reopened.labels[0] == 1).any()
    ed.save()
    assert len(os.listdir(folder)) == 2
    assert not (TrackEditor.open(folder).labels[0] == 1).any()


def test_bad_project_folders_are_refused(ed, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        ed.save(tmp_path / "f.txt")
    with pytest.raises(ValueError, match="not a project"):
        ed.save(tmp_path)  # a folder with other files (e.g. the movie's) is never used
    with pytest.raises(ValueError, match="no project folder"):
        ed.save()
    ed.meta["movie"] = tmp_path  # a Path is not JSON
    with pytest.raises(ValueError, match="JSON-serialisable"):
        ed.save(tmp_path / "m.tracks")
    assert not (tmp_path / "m.tracks").exists()
    ed.meta["movie"] = str(tmp_path)
    with pytest.raises(FileNotFoundError):
        TrackEditor.open(tmp_path / "missing.tracks")
    junk = tmp_path / "junk.tracks"
    junk.mkdir()
    (junk / "state.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable project"):
        TrackEditor.open(junk)

    ed.delete_cell(2, 1)
    good = ed.save(tmp_path / "good.tracks")
    arrays = dict(np.load(good / "state.npz"))
    hdr = json.loads(arrays["header"].tobytes())

    def evil(name, **changes):
        folder = tmp_path / name
        folder.mkdir()
        for f in good.glob("base-*.npz"):
            (folder / f.name).write_bytes(f.read_bytes())
        np.savez(folder / "state.npz", **dict(arrays, **changes))
        return folder

    # A patch box pointing outside the movie is refused, not written.
    box = arrays["patch_box"].copy()
    box[0, 1] = H - 1
    with pytest.raises(ValueError, match="outside the movie"):
        TrackEditor.open(evil("e1", patch_box=box))
    # Unknown action kinds are refused (no class is looked up by name).
    h = json.loads(json.dumps(hdr))
    h["actions"]["undo"][0]["kind"] = "os.system"
    with pytest.raises(ValueError, match="unknown action"):
        TrackEditor.open(evil("e2", header=np.frombuffer(json.dumps(h).encode(), np.uint8)))
    # The base id names a file: anything but 32 hex digits is refused.
    h = dict(hdr, base="../../etc/passwd")
    with pytest.raises(ValueError, match="bad base id"):
        TrackEditor.open(evil("e3", header=np.frombuffer(json.dumps(h).encode(), np.uint8)))
    # Object arrays would need pickle: refused.
    with pytest.raises(ValueError):
        TrackEditor.open(evil("e4", lineage=np.array([{"a": 1}], dtype=object)))
    # A history that does not lead to the saved state is refused.
    with pytest.raises(ValueError, match="does not give"):
        TrackEditor.open(evil("e5", lineage=arrays["lineage"][:-1]))


def test_member_names_in_a_project_never_write_files(ed, tmp_path):
    folder = ed.save(tmp_path / "p.tracks")
    with zipfile.ZipFile(folder / "state.npz", "a") as z:
        z.writestr("../../escape.npy", b"x")
        z.writestr("/abs/escape.npy", b"x")
    ed2 = TrackEditor.open(folder)
    ed2.delete_cell(0, 1)
    ed2.save()
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert names[0] == "p.tracks" and len(names) == 3
    assert all(n.startswith("p.tracks/") for n in names[1:])


def test_from_ctc_result_and_export(ed, tmp_path):
    ed.delete_cell(2, 1)
    res = ed.export("ctc", tmp_path / "01_RES")
    back = TrackEditor.from_ctc_result(res)
    assert same(state(back), state(ed)) and back.meta["source"] == str(res)
    out = ed.export("csv", tmp_path / "c.csv")
    assert out.read_text().count("\n") == sum(len(ed.ids_in_frame(t)) for t in range(T)) + 1


def test_default_project_path(tmp_path):
    assert default_project_path(tmp_path / "01") == tmp_path / "01.tracks"
    assert default_project_path(tmp_path / "movie.tif") == tmp_path / "movie.tif.tracks"


def test_check_consistency_reports_problems():
    lab, lin = scene()
    assert check_consistency(lab, lin) == []
    bad = lin.copy()
    bad[2, 3] = 5  # 5 ends at 4, 3 starts at 3
    assert any("parent 5" in p for p in check_consistency(lab, bad))
    assert any("no lineage row" in p for p in check_consistency(lab, lin[:-1]))


def test_review_names_a_likely_identity_swap():
    """Two cells drifting slowly whose ids swap at frame 4: the review says so in words, from
    the movie's own motion (not a fixed pixel count)."""
    T2, shape = 8, (60, 120)
    lab = np.zeros((T2,) + shape, np.uint16)
    for t in range(T2):
        a, b = (1, 2) if t < 4 else (2, 1)
        lab[t][disc(30, 20 + t, 6, shape)] = a
        lab[t][disc(30, 90 + t, 6, shape)] = b
    lin = np.array([[1, 0, T2 - 1, 0], [2, 0, T2 - 1, 0]], np.int64)
    ed = TrackEditor(lab, lin)
    swaps = [c for c in ed.review_candidates() if "swapped identity" in c.reason]
    assert {(c.frame, c.track_id) for c in swaps} == {(4, 1), (4, 2)}
    assert "at frame 4" in swaps[0].reason


# ---- user actions: what a click means, decided in the core ------------------------------


def test_user_actions_need_a_selection_and_say_so(ed):
    from napari_cosine_tracker.core.user_actions import ACTIONS, ActionRefused, perform

    with pytest.raises(ActionRefused, match="Click a cell first"):
        perform(ed, "delete_cell", 0)
    with pytest.raises(ActionRefused, match="Shift\\+click a second cell"):
        perform(ed, "merge", 0, 1)
    with pytest.raises(ActionRefused, match="Nothing to undo"):
        perform(ed, "undo", 0)
    with pytest.raises(KeyError, match="unknown action"):
        perform(ed, "explode", 0, 1)
    # the editor's own refusals come back in words, and nothing changed
    before = state(ed)
    with pytest.raises(ActionRefused, match="must end before"):
        perform(ed, "mark_division", 0, 5, 1)  # 5 and 1 overlap in time: no mother
    assert same(state(ed), before)
    assert set(ACTIONS) >= {"swap", "link", "cut", "split", "merge", "mark_division"}


def test_swap_exchanges_tails_or_reassigns_as_the_tracks_allow(ed):
    from napari_cosine_tracker.core.user_actions import Selection, perform

    # 5 has cells where 1's tail goes (frames 2-4): the tails are exchanged
    assert perform(ed, "swap", 2, 1, 5) == Selection(5, 1)
    assert row(ed, 1) == (0, 4, 0) and row(ed, 5) == (1, 5, 0)
    ed.undo()
    # 5 ends at 4: from frame 5, 1's cells simply become 5's
    assert perform(ed, "swap", 5, 1, 5) == Selection(5, None)
    assert row(ed, 1) == (0, 4, 0) and row(ed, 5) == (1, 5, 0)


def test_link_cut_and_division_rules(ed):
    from napari_cosine_tracker.core.user_actions import ActionRefused, Selection, perform

    sel = perform(ed, "cut", 3, 1)
    tail = sel.primary
    assert tail != 1 and row(ed, tail) == (3, 5, 0)
    # linking picks the order by time, whichever was clicked first
    assert perform(ed, "link", 0, tail, 1) == Selection(1, None)
    assert row(ed, 1) == (0, 5, 0)
    # "cut" at a daughter's first frame detaches her from her mother
    perform(ed, "cut", 3, 3)
    assert row(ed, 3) == (3, 5, 0)
    with pytest.raises(ActionRefused, match="starts here and has no mother"):
        perform(ed, "cut", 3, 3)
    # the track that ends first is the mother, whichever is primary
    perform(ed, "mark_division", 3, 3, 2)
    assert row(ed, 3) == (3, 5, 2)
    perform(ed, "unmark_division", 3, 3)
    assert row(ed, 3) == (3, 5, 0)

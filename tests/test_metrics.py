"""Official CTC measures through py-ctcmetrics: perfect scores for the truth, lower for errors."""

import numpy as np
import pytest
import tifffile

from napari_cosine_tracker.core import io
from napari_cosine_tracker.core.metrics import (MetricsError, evaluate, format_table,
                                                match_masks, validate)
from napari_cosine_tracker.core.synthetic import make_synthetic_movie


@pytest.fixture(scope="module")
def small():
    """A short synthetic movie with divisions, written as ground truth."""
    m = make_synthetic_movie(n_frames=12, shape=(160, 160), n_cells=8, seed=0, division_rate=0.12)
    assert m.n_divisions >= 1
    return m


@pytest.fixture()
def gt_dir(tmp_path, small):
    return io.write_ctc_gt(tmp_path / "01_GT", small.labels, small.lineage)


def _parents(lineage):
    return {int(r[0]): int(r[3]) for r in lineage if r[3]}


def _write_valid(out, labels, parents):
    """Write perturbed labels as a valid result: re-appearing labels get new ids."""
    labels = np.array(labels, copy=True)
    nxt = int(labels.max()) + 1
    for lab in np.unique(labels)[1:]:
        ts = [t for t in range(len(labels)) if (labels[t] == lab).any()]
        gap = next((b for a, b in zip(ts, ts[1:]) if b != a + 1), None)
        if gap is not None:
            for t in range(gap, len(labels)):
                labels[t][labels[t] == lab] = nxt
            nxt += 1
    present = set(np.unique(labels).tolist())
    lin = io.lineage_from_labels(labels)
    ends = {int(r[0]): int(r[2]) for r in lin}
    starts = {int(r[0]): int(r[1]) for r in lin}
    keep = {c: p for c, p in parents.items()
            if c in present and p in present and ends[p] < starts[c]}
    return io.write_ctc_result(out, labels, io.lineage_from_labels(labels, keep))


def test_truth_scores_one(tmp_path, small, gt_dir):
    res = io.write_ctc_result(tmp_path / "01_RES", small.labels, small.lineage)
    s = evaluate(res, gt_dir)
    for k in ("SEG", "DET", "TRA", "LNK", "CT", "TF", "BC(0)", "BC(2)", "HOTA"):
        assert s[k] == pytest.approx(1.0), k
    assert s["CCA"] in (None, 1.0)  # None: no complete cell cycle in 12 frames
    assert s["Valid"] == 1 and s["AOGM"] == 0 and s["frames"] == 12 and s["seg_frames"] == 12
    table = format_table(s)
    assert table.splitlines()[0].split() == ["SEG", "1.0000"]
    assert validate(res) == []


def _drop_cell(m):
    lin = m.lineage
    victim = next(int(r[0]) for r in lin
                  if r[3] == 0 and r[0] not in lin[:, 3] and r[2] - r[1] >= 5)
    labels = m.labels.copy()
    labels[labels == victim] = 0
    return labels


def _merge_two(m):
    labels = m.labels.copy()
    for t in range(len(labels)):
        a, b = labels[t][:, :-1], labels[t][:, 1:]
        touch = (a > 0) & (b > 0) & (a != b)
        if touch.any():
            i, j = int(a[touch][0]), int(b[touch][0])
            labels[t][labels[t] == j] = i
            return labels
    raise AssertionError("no touching cells in the test movie")


def _break_track(m):
    lin = m.lineage
    r = max(lin.tolist(), key=lambda r: r[2] - r[1])
    labels = m.labels.copy()
    mid = (r[1] + r[2]) // 2
    labels[mid:][labels[mid:] == r[0]] = labels.max() + 1  # new id from mid on, no parent
    return labels


@pytest.mark.parametrize("perturb,lower", [
    (_drop_cell, ("SEG", "DET", "TRA")),
    (_merge_two, ("SEG", "DET", "TRA")),
    (_break_track, ("TRA", "LNK", "CT")),
])
def test_errors_score_lower(tmp_path, small, gt_dir, perturb, lower):
    res = _write_valid(tmp_path / "01_RES", perturb(small), _parents(small.lineage))
    assert validate(res) == []
    s = evaluate(res, gt_dir)
    for k in lower:
        assert s[k] < 1.0, (k, s[k])
    for k in ("SEG", "DET", "TRA"):
        assert 0.0 <= s[k] <= 1.0


def test_fast_path_equals_py_ctcmetrics(tmp_path, small, gt_dir):
    """Our overlap tables feed py-ctcmetrics exactly what its own evaluate_sequence computes."""
    res = _write_valid(tmp_path / "01_RES", _merge_two(small), _parents(small.lineage))
    # Partial SEG: drop some SEG frames to exercise the frame mapping.
    for t in (1, 4, 9):
        (gt_dir / "SEG" / f"man_seg{t:03d}.tif").unlink()
    fast = evaluate(res, gt_dir, fast=True)
    official = evaluate(res, gt_dir, fast=False)
    assert fast == official
    assert fast["seg_frames"] == 9


def test_match_masks_equals_official(tmp_path, small):
    from ctc_metrics.utils.representations import match

    ref, comp = small.labels[3], _merge_two(small)[3]
    pr, pc = tmp_path / "r.tif", tmp_path / "c.tif"
    tifffile.imwrite(pr, ref)
    tifffile.imwrite(pc, comp)
    assert match_masks(ref, comp) == match(str(pr), str(pc))


def test_invalid_result(tmp_path, small, gt_dir):
    res = io.write_ctc_result(tmp_path / "01_RES", small.labels, small.lineage)
    # A track that is in res_track.txt but in no mask.
    io.write_lineage(res / "res_track.txt", np.vstack([small.lineage, [[999, 0, 3, 0]]]))
    problems = validate(res)
    assert problems and any("999" in p for p in problems)
    with pytest.raises(MetricsError, match="not a valid CTC result"):
        evaluate(res, gt_dir)
    assert evaluate(res, gt_dir, strict=False)["Valid"] == 0


def test_folder_errors(tmp_path, small, gt_dir):
    with pytest.raises(MetricsError, match="result folder.*not found"):
        evaluate(tmp_path / "missing", gt_dir)
    res = io.write_ctc_result(tmp_path / "01_RES", small.labels[:5],
                              io.lineage_from_labels(small.labels[:5]))
    with pytest.raises(MetricsError, match="has 5 mask frames but .* has 12"):
        evaluate(res, gt_dir)
    with pytest.raises(MetricsError, match="ground-truth folder.*no TRA"):
        evaluate(res, res)
    with pytest.raises(MetricsError, match="not found"):
        validate(tmp_path / "missing")
    (res / "res_track.txt").write_text("1 0 x 0\n")
    assert "line 1" in validate(res)[0]
    with pytest.raises(MetricsError, match="unknown measure"):
        evaluate(res, gt_dir, metrics=["SEG", "FOO"])


@pytest.mark.shared_data
def test_sim_truth_window_scores_one(tmp_path, shared_data):
    gt = io.slice_ctc_gt(shared_data / "ctc" / "Fluo-N2DH-SIM+" / "01_GT", 20, 25,
                         tmp_path / "01_GT")
    g = io.read_ctc_gt(gt)
    res = io.write_ctc_result(tmp_path / "01_RES", g.tra, g.lineage)
    s = evaluate(res, gt)
    assert s["SEG"] == s["DET"] == s["TRA"] == 1.0 and s["frames"] == 5


@pytest.mark.shared_data
def test_gowt1_partial_seg(tmp_path, shared_data):
    """GOWT1: SEG on some frames only, partially annotated; TRA markers on every frame."""
    src = shared_data / "ctc" / "Fluo-N2DH-GOWT1" / "01_GT"
    gt = io.slice_ctc_gt(src, 4, 8, tmp_path / "01_GT")  # SEG frames 5, 6, 7 -> 1, 2, 3
    g = io.read_ctc_gt(gt)
    assert sorted(g.seg) == [1, 2, 3]
    res = io.write_ctc_result(tmp_path / "01_RES", g.tra, g.lineage)
    s = evaluate(res, gt, metrics=["SEG", "DET", "TRA"])
    assert s["DET"] == s["TRA"] == 1.0
    assert 0.0 < s["SEG"] < 1.0  # markers are smaller than the cells
    # A window without SEG frames still gives DET/TRA.
    gt2 = io.slice_ctc_gt(src, 60, 63, tmp_path / "b" / "01_GT")
    g2 = io.read_ctc_gt(gt2)
    res2 = io.write_ctc_result(tmp_path / "b" / "01_RES", g2.tra, g2.lineage)
    s2 = evaluate(res2, gt2)
    assert "SEG" not in s2 and s2["TRA"] == 1.0 and s2["seg_frames"] == 0


@pytest.mark.shared_data
def test_match_masks_equals_official_on_real_frames(shared_data):
    from ctc_metrics.utils.representations import match

    gt = shared_data / "ctc" / "Fluo-N2DH-GOWT1" / "01_GT"
    ref, comp = gt / "SEG" / "man_seg005.tif", gt / "TRA" / "man_track005.tif"
    assert match_masks(tifffile.imread(ref), tifffile.imread(comp)) == match(str(ref),
                                                                             str(comp))

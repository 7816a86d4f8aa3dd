"""Official Cell Tracking Challenge measures (SEG, DET, TRA, LNK, BC(i), CT, TF, CCA, ...).

The measures are computed by `py-ctcmetrics <https://github.com/CellTrackingChallenge/py-ctcmetrics>`_
(``ctc_metrics.scripts.evaluate.calculate_metrics`` and ``ctc_metrics.metrics.valid``), on a
result folder (``maskTTT.tif`` + ``res_track.txt``) and a ground-truth folder (``SEG/``,
``TRA/``), exactly as its ``ctc_evaluate`` command does.

One step is done here rather than in py-ctcmetrics: the per-frame overlap tables between
reference and computed masks. py-ctcmetrics builds them with scikit-learn's
``confusion_matrix``, which maps every pixel through a Python dict (about a second per
megapixel frame); :func:`match_masks` computes the identical output (same matches, same IoU
values, same order) with one ``numpy.bincount``. ``evaluate(..., fast=False)`` runs
py-ctcmetrics' own ``evaluate_sequence`` end to end instead; a test checks both agree.
"""

from __future__ import annotations

import contextlib
import io as _io
import math
import warnings
from pathlib import Path

import numpy as np
import tifffile

from .io import MovieError, read_ctc_gt, read_ctc_result

__all__ = ["MetricsError", "DEFAULT_METRICS", "evaluate", "validate", "match_masks", "foreground_auc",
           "format_table"]

#: Measures computed by default: everything py-ctcmetrics offers for 2-D sequences.
DEFAULT_METRICS = ("Valid", "SEG", "DET", "TRA", "LNK", "CT", "TF", "BC", "CCA", "BIO",
                   "OP_CSB", "OP_CTB", "OP_CLB", "CHOTA", "HOTA", "MOTA", "IDF1", "MTML",
                   "FAF")

#: The headline measures shown first in tables.
HEADLINE = ("SEG", "DET", "TRA", "LNK", "BC(0)", "BC(1)", "BC(2)", "BC(3)", "CT", "TF", "CCA",
            "BIO(0)", "OP_CSB", "OP_CTB", "HOTA", "CHOTA", "IDF1", "MOTA")


class MetricsError(ValueError):
    """A result or ground-truth folder that cannot be evaluated; the message says why."""


def _quiet():
    """Silence py-ctcmetrics' progress prints and record its warnings (the validity reasons)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(_io.StringIO()))
    caught = stack.enter_context(warnings.catch_warnings(record=True))
    warnings.simplefilter("always")
    return stack, caught


def match_masks(ref: np.ndarray, comp: np.ndarray):
    """Match reference to computed labels of one frame, as py-ctcmetrics' ``match`` does.

    A reference object is matched to the computed object covering more than half of it.

    Returns
    -------
    labels_ref, labels_comp, mapped_ref, mapped_comp, iou : lists
        Labels present (without 0), matched pairs, and each pair's intersection over union.
    """
    ref = np.asarray(ref)
    comp = np.asarray(comp)
    if ref.shape != comp.shape:
        raise MetricsError(f"reference frame of shape {ref.shape} and result frame of shape "
                           f"{comp.shape} differ")
    lr, ri = _dense(ref.ravel())
    lc, ci = _dense(comp.ravel())
    cm = np.bincount(ri * len(lc) + ci, minlength=len(lr) * len(lc)).reshape(len(lr), len(lc))
    sum_ref = cm.sum(axis=1, keepdims=True)
    sum_comp = cm.sum(axis=0, keepdims=True)
    ior = cm / np.maximum(sum_ref, 1)
    iou = cm / np.maximum(sum_ref + sum_comp - cm, 1)
    r0 = 1 if lr.size and lr[0] == 0 else 0  # drop background row / column
    c0 = 1 if lc.size and lc[0] == 0 else 0
    ior, iou = ior[r0:, c0:], iou[r0:, c0:]
    lr, lc = lr[r0:], lc[c0:]
    rows, cols = np.nonzero(ior > 0.5)
    return (lr.tolist(), lc.tolist(), lr[rows].tolist(), lc[cols].tolist(),
            iou[rows, cols].tolist())


def _dense(x: np.ndarray):
    """(sorted labels present, index of each pixel's label) -- np.unique(return_inverse) without
    the sort, through a lookup table, for the small non-negative integers of label images."""
    if x.dtype.kind in "ui" and x.size and x.min() >= 0 and x.max() < 2**24:
        counts = np.bincount(x)
        labels = np.flatnonzero(counts)
        lut = np.zeros(counts.size, np.int64)
        lut[labels] = np.arange(labels.size)
        return labels, lut[x]
    labels, inv = np.unique(x, return_inverse=True)
    return labels, inv.ravel()


def _collect(pairs):
    """py-ctcmetrics' layout of per-frame matches (see its match_computed_to_reference_masks)."""
    out = {"labels_ref": [], "labels_comp": [], "mapped_ref": [], "mapped_comp": [], "ious": []}
    for ref_path, comp_path in pairs:
        m = match_masks(_imread(ref_path), _imread(comp_path))
        for key, val in zip(out, m):
            out[key].append(val)
    return out


def _imread(path: Path) -> np.ndarray:
    try:
        return tifffile.imread(path)
    except Exception as e:
        raise MetricsError(f"{path}: cannot read the mask ({e}); write it again") from e


def _open(res_dir, gt_dir):
    """Read and cross-check both folders; clear errors instead of deep library failures."""
    res_dir, gt_dir = Path(res_dir), Path(gt_dir)
    try:
        masks, comp_tracks = read_ctc_result(res_dir)
    except MovieError as e:
        raise MetricsError(f"result folder: {e}") from e
    try:
        gt = read_ctc_gt(gt_dir)
    except MovieError as e:
        raise MetricsError(f"ground-truth folder: {e}") from e
    if len(masks) != len(gt.tra):
        raise MetricsError(
            f"{res_dir} has {len(masks)} mask frames but {gt_dir / 'TRA'} has {len(gt.tra)}; "
            "a result must cover every frame of its ground truth (cut a matching window with "
            "slice_ctc_gt for partial evaluations)")
    if masks.frame_numbers != gt.tra.frame_numbers:
        raise MetricsError(f"{res_dir}: mask frame numbers {masks.frame_numbers[:3]}... do not "
                           f"match the ground truth's {gt.tra.frame_numbers[:3]}...")
    if masks.shape[1:] != gt.tra.shape[1:]:
        raise MetricsError(f"{res_dir}: masks are {masks.shape[1:]} but the ground truth is "
                           f"{gt.tra.shape[1:]}; the result must have the frame size of the "
                           "images it was computed on")
    if len(comp_tracks) == 0:
        raise MetricsError(f"{res_dir / 'res_track.txt'}: no tracks; an empty result cannot "
                           "be evaluated")
    bad_seg = [t for t in gt.seg if t not in masks.frame_numbers]
    if bad_seg:
        raise MetricsError(f"{gt_dir / 'SEG'}: SEG frame(s) {bad_seg[:5]} have no result frame")
    return masks, comp_tracks, gt


def validate(res_dir) -> list[str]:
    """Check a result folder with py-ctcmetrics' validity test (as ``ctc_validate`` does).

    Returns
    -------
    list of str
        The problems found; empty when the result is valid.

    Raises
    ------
    MetricsError
        If ``res_dir`` does not exist.
    """
    from ctc_metrics.metrics import valid

    res_dir = Path(res_dir)
    if not res_dir.is_dir():
        raise MetricsError(f"{res_dir}: result folder not found")
    try:
        masks, tracks = read_ctc_result(res_dir)
    except MovieError as e:
        return [str(e)]
    if len(tracks) == 0:
        return [f"{res_dir / 'res_track.txt'}: no tracks"]
    labels_in_frames = []
    for t in range(len(masks)):
        u = np.unique(masks[t])
        labels_in_frames.append(u[u != 0].tolist())
    stack, caught = _quiet()
    with stack:
        ok = valid([str(p) for p in masks.files], tracks, labels_in_frames)
    problems = [str(w.message) for w in caught if issubclass(w.category, UserWarning)
                and not str(w.message).startswith("Empty frame")]
    if not ok and not problems:
        problems = ["py-ctcmetrics reports the result as invalid"]
    return problems if not ok else []


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    return v


def evaluate(res_dir, gt_dir, metrics=None, *, fast: bool = True, strict: bool = True) -> dict:
    """Score a CTC result folder against its ground truth with py-ctcmetrics.

    Parameters
    ----------
    res_dir : str or Path
        Result folder (``maskTTT.tif`` for every frame + ``res_track.txt``).
    gt_dir : str or Path
        Ground-truth folder (``TRA/`` with markers on every frame and ``man_track.txt``;
        ``SEG/`` on all or some frames, possibly partial as in GOWT1).
    metrics : sequence of str, optional
        py-ctcmetrics measure names; default :data:`DEFAULT_METRICS` (all). SEG (and the
        measures built on it) is left out when the ground truth has no SEG frame.
    fast : bool
        Compute the per-frame overlap tables with numpy (identical output, much faster);
        False runs ``ctc_metrics.evaluate_sequence`` unchanged.
    strict : bool
        Raise :class:`MetricsError` listing the problems if the result is not valid CTC
        (py-ctcmetrics would score it 0); False returns its ``{"Valid": 0, ...}`` instead.

    Returns
    -------
    dict
        Measure name -> value (float or int; None where py-ctcmetrics has none, e.g. no
        division in the ground truth), e.g. ``SEG``, ``DET``, ``TRA``, ``LNK``, ``BC(0)``..
        ``BC(3)``, ``CT``, ``TF``, ``CCA``, ``AOGM``, plus ``frames`` and ``seg_frames``.
    """
    wanted = list(DEFAULT_METRICS if metrics is None else metrics)
    unknown = [m for m in wanted if m not in DEFAULT_METRICS and not m.startswith("BC(")]
    if unknown:
        raise MetricsError(f"unknown measure(s) {unknown}; choose from {list(DEFAULT_METRICS)}")
    masks, comp_tracks, gt = _open(res_dir, gt_dir)
    # Imported here: py-ctcmetrics pulls in scikit-learn (seconds), not needed to report errors.
    from ctc_metrics.metrics import valid
    from ctc_metrics.scripts.evaluate import calculate_metrics, evaluate_sequence

    if not gt.seg:
        wanted = [m for m in wanted if m not in ("SEG", "OP_CSB", "OP_CTB")]
    if "Valid" not in wanted:
        wanted.insert(0, "Valid")
    stack, caught = _quiet()
    with stack:
        if fast:
            traj = _collect(zip(gt.tra.files, masks.files))
            is_valid = valid([str(p) for p in masks.files], comp_tracks, traj["labels_comp"])
            segm = {}
            if "SEG" in wanted:
                index = {n: i for i, n in enumerate(masks.frame_numbers)}
                segm = _collect((p, masks.files[index[t]]) for t, p in gt.seg.items())
            results = calculate_metrics(comp_tracks, gt.lineage, traj, segm, list(wanted),
                                        is_valid)
        else:
            results = evaluate_sequence(str(res_dir), str(gt_dir), metrics=list(wanted),
                                        threads=1)
    if not results.get("Valid"):
        problems = [str(w.message) for w in caught if issubclass(w.category, UserWarning)
                    and not str(w.message).startswith("Empty frame")]
        if strict:
            raise MetricsError(f"{res_dir}: not a valid CTC result: "
                               + ("; ".join(problems[:5]) or "see ctc_validate")
                               + ". Fix it (napari_cosine_tracker.core.io.check_lineage lists "
                                 "the problems) before scoring")
    # py-ctcmetrics leaves placeholders (None) for aggregates it expands (BC -> BC(i), BIO ->
    # BIO(i), MTML -> MT, ML); drop those, but keep a requested headline measure that has no
    # value (e.g. CCA without a complete cell cycle) so a table shows it as n/a.
    out = {k: _plain(v) for k, v in results.items() if v is not None or k in HEADLINE}
    out["frames"] = len(masks)
    out["seg_frames"] = len(gt.seg)
    return out


def foreground_auc(seq_dir, gt_dir, frame: int, model_dir=None, warmup: int = 3, device="cpu") -> float:
    """ROC-AUC of ``-embedding[0]`` (the model's foreground score) on one frame of a CTC
    sequence, against its ground truth, after ``warmup`` frames of recurrent state.

    Truth is SEG where the frame has it, plus the TRA masks; pixels within 12 px of a cell that
    only a TRA marker annotates are left out (they may be cell or background).
    """
    from scipy import ndimage as ndi
    from sklearn.metrics import roc_auc_score

    from .inference import EmbeddingStream
    from .preprocess import rescale_labels

    seq_dir, gt_dir = Path(seq_dir), Path(gt_dir)
    stream = EmbeddingStream(model_dir, device=device)
    for t in range(max(0, frame - warmup), frame + 1):
        emb = stream.push(tifffile.imread(seq_dir / f"t{t:03d}.tif"))
    seg_path = gt_dir / "SEG" / f"man_seg{frame:03d}.tif"
    tra = tifffile.imread(gt_dir / "TRA" / f"man_track{frame:03d}.tif")
    seg = tifffile.imread(seg_path) if seg_path.exists() else np.zeros_like(tra)
    truth = (seg > 0) | (tra > 0)
    unsure = ndi.binary_dilation(tra > 0, iterations=12) & ~truth
    truth = rescale_labels(truth.astype(np.uint8), emb.shape[1:]).astype(bool)
    valid = ~rescale_labels(unsure.astype(np.uint8), emb.shape[1:]).astype(bool)
    return float(roc_auc_score(truth[valid], -emb[0][valid]))


def format_table(scores: dict, keys=None) -> str:
    """A two-column text table of measures, headline measures first."""
    keys = list(keys) if keys is not None else (
        [k for k in HEADLINE if k in scores] + ["Valid", "AOGM", "frames", "seg_frames"])
    keys = [k for k in keys if k in scores]
    width = max((len(k) for k in keys), default=4)
    lines = []
    for k in keys:
        v = scores[k]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            s = "n/a"
        elif isinstance(v, float):
            s = f"{v:.4f}"
        else:
            s = str(v)
        lines.append(f"{k:<{width}}  {s}")
    return "\n".join(lines)

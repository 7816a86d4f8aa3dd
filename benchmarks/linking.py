"""Linking accuracy on given masks: the global linker against the pair-IoU chaining.

For each shared CTC sequence the masks are taken as a user would bring them, with their ids
shuffled in every frame so that nothing but the linker can carry identities:

* gold segmentation where it covers every frame (Fluo-N2DH-SIM+),
* silver truth (``01_ST/SEG``) where there is one (DIC-C2DH-HeLa, PhC-C2DL-PSC),
* else the tracking markers (``01_GT/TRA``; Fluo-N2DH-GOWT1, Fluo-C2DL-MSC), which detect
  every cell but are smaller than the cell.

Each is linked by the global linker (``core.link``, laptrack) and by the IoU chaining
(``core.track.link_frames``); with ``--own N`` the shipped model's own segmentation of the
first N frames is linked too, by the pipeline's two linkers (``TrackParams.linker``) and scored with the official measures (py-ctcmetrics): LNK,
BIO (the mean of CT, TF, BC(0) and CCA where defined), OP_CLB = (LNK + BIO) / 2, and the
F1 of divisions (a predicted division is right when its mother and both daughters match
the truth's, by the CTC's marker matching). Whole movies; the linker has no trained
parameters (its reach is learnt from each movie's own motion), so scoring on these movies
is fair.

    python benchmarks/linking.py [--data ../shared/data/ctc] [--frames N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import laptrack  # noqa: F401  (imported before the clock starts: pandas and co. take a second)
import numpy as np
import tifffile

from napari_cosine_tracker.core.io import slice_ctc_gt, write_ctc_result
from napari_cosine_tracker.core.link import LinkParams, link_labels
from napari_cosine_tracker.core.metrics import evaluate
from napari_cosine_tracker.core.track import link_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import machine  # noqa: E402  (one description of the machine for all benchmarks)

SEQUENCES = ["Fluo-N2DH-SIM+/01", "Fluo-N2DH-GOWT1/01", "Fluo-C2DL-MSC/01", "DIC-C2DH-HeLa/01",
             "PhC-C2DL-PSC/01"]
MEASURES = ["LNK", "BIO", "OP_CLB", "CT", "TF", "BC(0)", "CCA", "DET", "TRA"]


def given_masks(seq: Path, frames: int | None):
    """The masks a user would bring for ``seq`` (see the module notes), ids shuffled per
    frame, and which kind they are."""
    gt = seq.with_name(seq.name + "_GT")
    st = seq.with_name(seq.name + "_ST") / "SEG"
    n = len(list(seq.glob("t*.tif")))
    if n == 0 or not gt.is_dir():
        raise SystemExit(f"{seq} is not a CTC sequence with frames t*.tif and a {gt.name} folder "
                         "beside it; give DATASET/01, e.g. PhC-C2DL-PSC/01")
    n = min(n, frames) if frames else n
    gold = sorted((gt / "SEG").glob("man_seg*.tif"))
    if len(gold) >= len(list(seq.glob("t*.tif"))):
        kind, paths = "gold", gold
    elif st.is_dir():
        kind, paths = "silver", sorted(st.glob("man_seg*.tif"))
    else:
        kind, paths = "markers", sorted((gt / "TRA").glob("man_track*.tif"))
    rng = np.random.default_rng(0)
    masks = []
    for path in paths[:n]:
        lab = tifffile.imread(path).astype(np.int64)
        ids = np.unique(lab)
        ids = ids[ids > 0]
        lut = np.zeros(int(lab.max()) + 1, np.int64)
        lut[ids] = rng.permutation(ids.size) + 1
        masks.append(lut[lab].astype(np.int32))
    return np.stack(masks), kind


def _nodes(labels, lineage):
    """Divisions as (frame of the daughters, mother's marker set...) via per-frame centroids."""
    out = []
    kids: dict[int, list[int]] = {}
    for i, b, e, p in lineage.tolist():
        if p:
            kids.setdefault(p, []).append(i)
    rows = {r[0]: r for r in lineage.tolist()}
    for p, ds in kids.items():
        if len(ds) < 2:
            continue
        out.append((rows[p][2], p, tuple(ds)))
    return out


def division_f1(res_labels, res_lineage, gt_dir: Path, frames: int) -> tuple[float, int, int, int]:
    """F1 of divisions: a predicted division counts when, in the frame before the daughters
    begin, the mother's mask holds the true mother's marker and each daughter's mask holds a
    true daughter's marker (one frame of tolerance in time)."""
    from napari_cosine_tracker.core.io import read_lineage

    gt_lin = read_lineage(gt_dir / "TRA" / "man_track.txt")
    gt_lin = gt_lin[gt_lin[:, 1] < frames]
    tra = {}

    def marker(t):
        if t not in tra:
            tra[t] = tifffile.imread(gt_dir / "TRA" / f"man_track{t:03d}.tif")
        return tra[t]

    truth = [d for d in _nodes(None, gt_lin) if d[0] + 1 < frames]
    pred = [d for d in _nodes(None, res_lineage) if d[0] + 1 < frames]

    def gt_ids(mask_ids, t, labels):
        m = marker(t)
        return {int(v) for v in np.unique(m[np.isin(labels[t], mask_ids)]) if v}

    matched = 0
    used = set()
    for t, p, ds in pred:
        ok = False
        for k, (tt, gp, gds) in enumerate(truth):
            if k in used or abs(tt - t) > 1:
                continue
            mothers = gt_ids([p], t, res_labels) if t >= 0 else set()
            if gp not in mothers:
                continue
            t1 = min(t + 1, frames - 1)
            got = [gt_ids([d], t1, res_labels) for d in ds]
            if sum(bool(set(gds) & g) for g in got) >= 2:
                ok = True
                used.add(k)
                break
        matched += ok
    prec = matched / len(pred) if pred else float("nan")
    rec = matched / len(truth) if truth else float("nan")
    f1 = 2 * matched / (len(pred) + len(truth)) if (pred or truth) else float("nan")
    return f1, matched, len(pred), len(truth)


def score(labels, lineage, gt_dir: Path, work: Path, name: str, n_frames: int) -> dict:
    res = work / f"{name}_RES"
    write_ctc_result(res, labels, lineage)
    gt = gt_dir
    total = len(list((gt_dir / "TRA").glob("man_track*.tif")))
    if n_frames < total:
        gt = slice_ctc_gt(gt_dir, 0, n_frames, work / f"{name}_GT")
    s = evaluate(res, gt, ["DET", "TRA", "LNK", "CT", "TF", "BC", "CCA"])
    bio = [s[k] for k in ("CT", "TF", "BC(0)", "CCA") if s.get(k) is not None]
    s["BIO"] = float(np.mean(bio)) if bio else None
    s["OP_CLB"] = (s["LNK"] + s["BIO"]) / 2 if s["BIO"] is not None else s["LNK"]
    f1, hit, npred, ntrue = division_f1(labels, lineage, gt, n_frames)
    s.update({"division_F1": f1, "divisions_found": hit, "divisions_predicted": npred,
              "divisions_true": ntrue})
    return s


def own_masks(seq: Path, frames: int, model_dir=None):
    """A model (the shipped default unless ``model_dir``) run on the first ``frames`` frames
    at the scale that brings the sequence's cells (measured on its truth) to the model's cell
    size: one network run, its session re-tracked by each linker. Returns (session, frames,
    scale)."""
    from napari_cosine_tracker.core.cellsize import model_cell_diameter
    from napari_cosine_tracker.core.io import read_movie
    from napari_cosine_tracker.core.pipeline import TrackingSession
    from napari_cosine_tracker.core.train import sequence_cell_diameter

    movie = read_movie(seq)
    n = min(frames, len(movie))
    stack = np.stack([np.asarray(movie[t]) for t in range(n)])
    session = TrackingSession(stack, model_dir, device="cpu", tree_process=False)
    pixel_scale = session.stream.pixel_scale
    scale = model_cell_diameter(session.stream.config) / (sequence_cell_diameter(seq) * pixel_scale)
    session = TrackingSession(stack, model_dir, device="cpu", tree_process=False,
                              scale=round(scale, 2))
    for _ in session.run_model():
        pass
    return session, n, round(scale, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ctc"))
    ap.add_argument("--sequences", nargs="+", default=SEQUENCES)
    ap.add_argument("--frames", type=int, default=None, help="first N frames only (default: whole movies)")
    ap.add_argument("--linkers", nargs="+", default=["global", "iou"], choices=["global", "iou"])
    ap.add_argument("--own", type=int, default=0, metavar="N",
                    help="also link the shipped model's own masks of the first N frames")
    ap.add_argument("--model", default=None,
                    help="with --own: this model (a name or folder) instead of the shipped default; "
                         "score a model only on a dataset it never saw")
    ap.add_argument("--json", default=None, help="write all scores here")
    args = ap.parse_args(argv)
    data = Path(args.data)
    print(f"machine: {machine()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.sequences:
            seq = data / name
            if not seq.is_dir():
                print(f"{name}: not found under {data}, skipped")
                continue
            masks, kind = given_masks(seq, args.frames)
            n = len(masks)
            cells = sum(int(np.unique(m).size - 1) for m in masks)
            for linker in args.linkers:
                t0 = time.perf_counter()
                if linker == "global":
                    tracked, lineage, info = link_labels(masks, LinkParams())
                else:
                    tracked, lineage = link_frames(masks)
                    info = {}
                seconds = time.perf_counter() - t0
                tag = f"{name.replace('/', '_')}_{linker}"
                s = score(tracked, lineage, seq.with_name(seq.name + "_GT"), work, tag, n)
                s.update({"masks": kind, "frames": n, "cells_per_frame": cells / n,
                          "ms_per_frame": 1000 * seconds / n,
                          "ms_per_frame_per_100_cells": 1000 * seconds / n / max(cells / n / 100, 1e-9),
                          **{k: v for k, v in info.items()}})
                results[f"{name} {linker}"] = s
                print(f"{name:20s} {kind:7s} {linker:6s} "
                      + " ".join(f"{k} {s[k]:.3f}" if isinstance(s.get(k), float) else f"{k} n/a"
                                 for k in MEASURES)
                      + f"  div F1 {s['division_F1']:.2f} ({s['divisions_found']}/{s['divisions_predicted']}"
                        f" of {s['divisions_true']})"
                      + f"  {s['cells_per_frame']:.0f} cells/frame, {s['ms_per_frame']:.1f} ms/frame = "
                        f"{s['ms_per_frame_per_100_cells']:.1f} ms/frame/100 cells", flush=True)
            if args.own:
                from napari_cosine_tracker.core.track import TrackParams

                session, n, scale = own_masks(seq, args.own, args.model)
                for linker in ("global" if "global" in args.linkers else None,
                               "pairs" if "iou" in args.linkers else None):
                    if linker is None:
                        continue
                    for _ in session.track(track_params=TrackParams(linker=linker)):
                        pass
                    r = session.result
                    tag = f"{name.replace('/', '_')}_own_{linker}"
                    s = score(np.asarray(r.labels), r.lineage, seq.with_name(seq.name + "_GT"), work, tag, n)
                    s.update({"masks": f"model x{scale}", "frames": n})
                    results[f"{name} own {linker}"] = s
                    print(f"{name:20s} model  {linker:6s} "
                          + " ".join(f"{k} {s[k]:.3f}" if isinstance(s.get(k), float) else f"{k} n/a"
                                     for k in MEASURES)
                          + f"  div F1 {s['division_F1']:.2f} ({s['divisions_found']}/"
                            f"{s['divisions_predicted']} of {s['divisions_true']})  scale {scale}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

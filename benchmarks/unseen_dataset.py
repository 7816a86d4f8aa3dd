"""Leave-one-dataset-out: score models on a shared CTC movie none of them trained on.

Each model tracks the whole movie with its own recommended clustering, at the scale that
brings the truth's cells to the model's cell size (``--scale oracle``, to compare what the
models can do) and at the scale the model estimates itself (``--scale auto``, what a user
gets); official measures (py-ctcmetrics), DET on frames 0-4 beside the rest.

    python benchmarks/unseen_dataset.py ../shared/data/ctc/DIC-C2DH-HeLa/01 \\
        --models shipped runs/lodo-dic [--frames N] [--json OUT]

A model may only be scored here on a dataset that was left out of its training (its
config.json lists its training data; the script refuses otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_cosine_tracker.core.cellsize import estimate_scale, model_cell_diameter, model_cell_range
from napari_cosine_tracker.core.io import read_movie, slice_ctc_gt, write_ctc_result
from napari_cosine_tracker.core.metrics import evaluate
from napari_cosine_tracker.core.model import load_model
from napari_cosine_tracker.core.pipeline import track_movie
from napari_cosine_tracker.core.track import link_frames
from napari_cosine_tracker.core.train import sequence_cell_diameter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import machine  # noqa: E402

MEASURES = ["SEG", "DET", "TRA", "LNK", "CT", "TF", "BC(0)"]


def trained_frames(config: dict) -> dict:
    """Dataset name -> ranges of the frame numbers the model's training (and its init's)
    used; all of them where only the name is recorded."""
    seen: dict = {}
    tr = config.get("training", {})
    while tr:
        for d in tr.get("data", []):
            first, last = d.get("frames", (0, 10**6))
            seen.setdefault(d.get("name", ""), []).append(range(first, last + 1))
        for name in tr.get("init_data", []):
            seen.setdefault(name, []).append(range(10**6))
        tr = tr.get("pretraining") or {}
    return seen


def trained_on(config: dict) -> list[str]:
    """Names of the CTC datasets a model's training (and its init's) saw."""
    return list(trained_frames(config))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("movie", help="CTC image folder (ground truth in <movie>_GT)")
    ap.add_argument("--models", nargs="+", default=["shipped"])
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--first", type=int, default=0,
                    help="start at this frame (e.g. past frames used to choose settings)")
    ap.add_argument("--scale", nargs="+", default=["oracle", "auto"], metavar="HOW",
                    help="oracle: the truth's cells to the model's cell size; range: the truth's "
                         "cells just into the model's trained size range; auto: the model's own "
                         "estimate; or a number")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    seq = Path(args.movie)
    dataset = seq.parent.name
    movie = read_movie(seq)
    first = int(args.first)
    if not 0 <= first < len(movie):
        raise SystemExit(f"--first {first} is outside the movie's {len(movie)} frames")
    n = min(args.frames or len(movie) - first, len(movie) - first)
    frames = np.stack([np.asarray(movie[t]) for t in range(first, first + n)])
    diameter = sequence_cell_diameter(seq)
    print(f"machine: {machine()}\nmovie: {seq} (frames {first}-{first + n - 1}, cells {diameter:.0f} px)")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gt = slice_ctc_gt(seq.with_name(seq.name + "_GT"), first, first + n, work / "GT")
        gt5 = slice_ctc_gt(seq.with_name(seq.name + "_GT"), first, first + min(5, n), work / "GT5")
        for name in args.models:
            model, config = load_model(name, device="cpu")
            seen = [d for d in trained_on(config) if d.startswith(dataset)]
            if seen:
                print(f"{name}: trained on {seen}; not scored on {dataset}")
                continue
            pixel_scale = float(config.get("preprocessing", {}).get("pixel_scale", 1.0))
            for how in args.scale:
                if how == "oracle":
                    scale = model_cell_diameter(config) / (diameter * pixel_scale)
                elif how == "range":
                    lo, hi = model_cell_range(config) or (model_cell_diameter(config),) * 2
                    scale = float(np.clip(1.0, lo / (diameter * pixel_scale),
                                          hi / (diameter * pixel_scale)))
                elif how != "auto":
                    scale = float(how)
                else:
                    scale = estimate_scale(frames, model=model, config=config, device="cpu").scale
                scale = float(np.clip(round(scale, 2), 0.1, 10))
                from napari_cosine_tracker.core.inference import EmbeddingStream

                stream = EmbeddingStream(model=model, config=config, device="cpu", scale=scale)
                t0 = time.perf_counter()
                result = track_movie(frames, stream=stream)
                seconds = (time.perf_counter() - t0) / n
                res = work / f"{Path(name).name}_{how}"
                write_ctc_result(res, result.labels, result.lineage)
                s = evaluate(res, gt, ["SEG", "DET", "TRA", "LNK", "CT", "TF", "BC"])
                first = np.asarray(result.labels)[: min(5, n)]
                tr, lin = link_frames(first)
                write_ctc_result(work / f"{Path(name).name}_{how}_5", tr, lin)
                s["DET_frames_0_4"] = evaluate(work / f"{Path(name).name}_{how}_5", gt5, ["DET"])["DET"]
                s.update({"scale": scale, "s_per_frame": seconds,
                          "s_per_megapixel": seconds / (frames.shape[1] * frames.shape[2] / 1e6)})
                out[f"{name} {how}"] = s
                print(f"{name:24s} scale {how:6s} {scale:5.2f}  "
                      + " ".join(f"{k} {s[k]:.3f}" if isinstance(s.get(k), float) else f"{k} n/a"
                                 for k in MEASURES)
                      + f"  DET(0-4) {s['DET_frames_0_4']:.3f}  {seconds:.2f} s/frame "
                        f"({s['s_per_megapixel']:.2f} s/Mpx)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "movie": str(seq), "results": out},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Teaching the model a new kind of movie: fine-tune on its first frames, score on the rest.

The user's workflow in the widget (*Teach the model*): track a movie the model has never
seen, correct the first frames, fine-tune on them, track the rest. Here the corrected first
frames are the movie's truth (its cells with their track ids; masks from the silver
segmentation where the gold is sparse), the fine-tune is the widget's own recipe (those
frames at the run's scale plus ``core.train.TEACH_DATA``, ``teaching_config``); then each model's
clustering is tuned on the corrected frames (as the user sets *Cell vs background* and the
rest while looking at them), and both models track the *remaining* frames, which neither
the fine-tune nor the tuning saw, at the same resize factor; official measures there.

    python benchmarks/teach.py ../shared/data/ctc/DIC-C2DH-HeLa/01 --model runs/lodo-dic \\
        --train-frames 20 --minutes 12 [--json OUT]

The base model must not have trained on the movie's dataset (refused otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_cosine_tracker.core.cellsize import estimate_scale
from napari_cosine_tracker.core.inference import EmbeddingStream
from napari_cosine_tracker.core.io import read_movie, slice_ctc_gt, write_ctc_result
from napari_cosine_tracker.core.metrics import evaluate
from napari_cosine_tracker.core.model import load_model
from napari_cosine_tracker.core.pipeline import track_movie
from napari_cosine_tracker.core.train import (
    TEACH_DATA,
    TEACH_LR,
    iter_train,
    load_ctc_sequence,
    teaching_config,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import machine  # noqa: E402
from unseen_dataset import trained_on  # noqa: E402


def score(model, config, frames, gt, scale, work: Path, name: str) -> dict:
    stream = EmbeddingStream(model=model, config=config, device="cpu", scale=scale)
    t0 = time.perf_counter()
    result = track_movie(frames, stream=stream)
    seconds = (time.perf_counter() - t0) / len(frames)
    res = write_ctc_result(work / name, result.labels, result.lineage)
    s = evaluate(res, gt, ["SEG", "DET", "TRA", "LNK"])
    s["s_per_frame"] = seconds
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("movie", help="CTC image folder (truth in <movie>_GT, <movie>_ST)")
    ap.add_argument("--model", default="fluorescence", help="base model (name or folder)")
    ap.add_argument("--train-frames", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=12.0, help="fine-tuning budget")
    ap.add_argument("--scale", type=float, default=None, help="resize factor (default: estimated)")
    ap.add_argument("--out", default=None, help="keep the fine-tuned model here")
    ap.add_argument("--taught", default=None,
                    help="a model already fine-tuned by this script (its --out): score it "
                         "without training again")
    ap.add_argument("--no-tune", dest="tune", action="store_false",
                    help="keep each model's clustering settings (default: tune both on the "
                         "corrected frames, as a user would)")
    ap.add_argument("--lr", type=float, default=TEACH_LR,
                    help=f"fine-tuning learning rate (default: the widget's, {TEACH_LR:g})")
    ap.add_argument("--with", dest="extra", nargs="*", default=list(TEACH_DATA), metavar="DATA",
                    help="training data beside the corrected frames (default: the widget's, "
                         f"{' '.join(TEACH_DATA)}); e.g. the base model's own CTC sequences")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    seq = Path(args.movie)
    dataset = seq.parent.name
    model, config = load_model(args.model, device="cpu")
    seen = [d for d in trained_on(config) if d.startswith(dataset)]
    if seen:
        raise SystemExit(f"{args.model} trained on {seen}: not a new kind of movie for it")
    movie = read_movie(seq)
    T, n = len(movie), int(args.train_frames)
    frames = np.stack([np.asarray(movie[t]) for t in range(T)])
    print(f"machine: {machine()}\nmovie: {seq} ({T} frames); corrected frames 0-{n - 1}, "
          f"scored on {n}-{T - 1}; base model {args.model}")
    scale = args.scale or estimate_scale(frames[:n], model=model, config=config, device="cpu").scale
    scale = round(float(scale), 2)
    pixel_scale = float(config.get("preprocessing", {}).get("pixel_scale", 1.0)) * scale
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = Path(args.out) if args.out else work / "taught"
        # The truth's cells with their track ids (a cell keeps its id from frame to frame,
        # as in a tracked, corrected layer; per-frame ids would teach the network that a
        # cell and itself a frame later are two instances), silver masks where gold is sparse.
        data = [load_ctc_sequence(seq, pixel_scale=pixel_scale, frames=slice(0, n)),
                *args.extra]
        if any(Path(d).resolve() == seq.resolve() for d in args.extra if ":" not in d):
            raise SystemExit("--with names the movie being taught: only its corrected frames "
                             "may be used")
        # the widget's recipe (TrackerWidget.fine_tune), with a wall-time budget
        cfg = teaching_config(args.model, max_minutes=args.minutes, n_frames=n, lr=args.lr,
                              # the base model's own size range for CTC data given with --with
                              cell_diameter=tuple(config.get("training", {}).get("config", {})
                                                  .get("cell_diameter") or ()) or None)
        t0 = time.perf_counter()
        if args.taught:
            out = Path(args.taught)
            import csv

            with open(out / "loss.csv") as f:
                losses = [float(r["loss"]) for r in csv.DictReader(f)]
        else:
            losses = [loss for _, loss in iter_train(data, out, cfg=cfg, progress=False,
                                                       command="benchmarks/teach.py")]
        minutes = (time.perf_counter() - t0) / 60
        # the mean over the first and last quarter of the steps (single steps are noisy)
        q = max(1, len(losses) // 4)
        print(f"fine-tuned {len(losses)} steps in {minutes:.1f} min (loss, mean of the first "
              f"and last quarter: {np.mean(losses[:q]):.3f} -> {np.mean(losses[-q:]):.3f}); "
              f"resize {scale}")
        gt = slice_ctc_gt(seq.with_name(seq.name + "_GT"), n, T, work / "GT")
        rest = frames[n:]
        models = {"base": Path(args.model), "taught": out}
        if args.tune:
            # The user's own workflow: the clustering settings chosen on the corrected frames
            # (the last ten of them), for each model alike; the rest stays unseen.
            import shutil

            from napari_cosine_tracker.core.model import resolve_model
            from napari_cosine_tracker.core.tune import tune_clustering

            base_copy = work / "base_model"
            shutil.copytree(resolve_model(args.model), base_copy,
                            ignore=shutil.ignore_patterns("checkpoint"))
            models["base"] = base_copy
            grid = {"fg_threshold": [0.0, 0.15, 0.3, 0.5], "min_cluster_size": [50, 100, 200],
                    "coord_scale": [20.0, 45.0, 90.0]}
            for name, folder in models.items():
                best = tune_clustering(folder, [seq], holdout=1 - n / T, window=min(10, n),
                                       grid=grid, device="cpu", scale=scale, log=lambda *_: None)
                print(f"{name}: clustering tuned on frames {max(0, n - 10)}-{n - 1}: "
                      + ", ".join(f"{k} {best['best'][k]}" for k in grid), flush=True)
        results = {}
        for name, folder in models.items():
            m, c = load_model(folder, device="cpu")
            results[name] = score(m, c, rest, gt, scale, work, name)
    for name, s in results.items():
        print(f"{name:7s} " + " ".join(f"{k} {s[k]:.3f}" for k in ("SEG", "DET", "TRA", "LNK")
                                       if isinstance(s.get(k), float))
              + f"  {s['s_per_frame']:.2f} s/frame")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "movie": str(seq), "model": str(args.model),
            "train_frames": n, "steps": len(losses), "minutes": minutes, "scale": scale,
            "lr": args.lr, "with": args.extra,
            "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

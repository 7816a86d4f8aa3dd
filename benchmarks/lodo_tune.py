"""Choose clustering defaults on datasets the models never saw (leave one dataset out).

A shipped model's clustering defaults chosen on frames of its own training movies fit what
it has memorised. Here each case is a leave-one-dataset-out model on the dataset left out of
its training; one set of clustering parameters is chosen by coordinate descent
(``core.tune.descend``) on the mean over the cases of the mean of SEG, DET and TRA (official
measures, first ``--frames`` frames). ``--check`` cases are scored only with the start and
the chosen parameters: a dataset kept out of the choice, to see whether the choice carries.

    python benchmarks/lodo_tune.py \\
        --case runs/lodo-gowt1:../shared/data/ctc/Fluo-N2DH-GOWT1/01:0.54 \\
        --case runs/lodo-msc:../shared/data/ctc/Fluo-C2DL-MSC/01:0.57 \\
        --check runs/lodo-sim:../shared/data/ctc/Fluo-N2DH-SIM+/01:auto \\
        --start fluorescence [--frames 30] [--json OUT]

Each case's scale is a number or ``auto`` (the model's own estimate, what a user gets). A
model is refused on a dataset its training saw (as in ``unseen_dataset.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from napari_cosine_tracker.core.cellsize import estimate_scale
from napari_cosine_tracker.core.io import read_movie, slice_ctc_sequence
from napari_cosine_tracker.core.model import load_model
from napari_cosine_tracker.core.pipeline import TrackingSession, default_params
from napari_cosine_tracker.core.tune import DEFAULT_GRID, descend, session_scorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import machine  # noqa: E402
from unseen_dataset import trained_on  # noqa: E402


def parse_case(text: str):
    model, seq, scale = text.rsplit(":", 2)
    return model, Path(seq), scale


def open_case(text: str, frames: int, tmp: Path, log=print):
    """A session of the case's model over the first ``frames`` frames of its dataset, its
    network run done."""
    model, seq, scale = parse_case(text)
    _, config = load_model(model, device="cpu")
    dataset = seq.parent.name
    if any(d.startswith(dataset) for d in trained_on(config)):
        raise SystemExit(f"{model} was trained on {dataset}: pick a model that never saw it.")
    n = min(frames, len(list(seq.glob("t*.tif"))))
    work = tmp / f"{dataset}_{seq.name}"
    movie_dir, gt_dir = slice_ctc_sequence(seq, 0, n, work)
    movie = read_movie(movie_dir)
    factor = estimate_scale(movie, model, device="cpu").scale if scale == "auto" else float(scale)
    t0 = time.perf_counter()
    session = TrackingSession(movie, model, device="cpu", scale=factor)
    for _ in session.run_model():
        pass
    log(f"{dataset}: {model} at {factor:.2f}, {n} frames, network {time.perf_counter() - t0:.0f} s")
    return (dataset, session, gt_dir, work)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", required=True, metavar="MODEL:SEQ:SCALE",
                    help="a model and the CTC movie of the dataset left out of its training")
    ap.add_argument("--check", action="append", default=[], metavar="MODEL:SEQ:SCALE",
                    help="scored with the start and the chosen parameters only")
    ap.add_argument("--start", default="fluorescence",
                    help="the model whose recommended clustering is the starting point")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    _, start_config = load_model(args.start, device="cpu")
    start, _ = default_params(start_config)
    with tempfile.TemporaryDirectory(prefix="nct-lodo-tune-") as tmp:
        tmp = Path(tmp)
        cases = [open_case(c, args.frames, tmp) for c in args.case]
        history: list = []
        t0 = time.perf_counter()
        best, best_score = descend(session_scorer(cases, history, lambda m: print(m, flush=True)),
                                   start, DEFAULT_GRID, rounds=args.rounds)
        print(f"chosen in {time.perf_counter() - t0:.0f} s over {len(history)} candidates: "
              f"{asdict(best)} (score {best_score:.4f}, start {history[0]['score']:.4f})", flush=True)
        checks = {}
        for text in args.check:
            case = open_case(text, args.frames, tmp)
            got: list = []
            score = session_scorer([case], got, lambda m: None)
            before, after = score(start), score(best)
            checks[text] = {"start": got[0], "chosen": got[1]}
            print(f"check {case[0]}: start {before:.4f} {got[0]['per_sequence']} -> chosen "
                  f"{after:.4f} {got[1]['per_sequence']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "start": asdict(start), "chosen": asdict(best),
            "score": best_score, "history": history, "checks": checks}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy on held-out frames of the shared CTC sequences, beside the classical reference.

For each sequence the last ``--holdout`` fraction of frames (the frames the shipped model was
*not* trained on; training used the first ones) is cut into a CTC window, tracked with the
shipped defaults and with the classical reference (Otsu + distance-transform watershed + IoU
linking), and both are scored with the official measures (py-ctcmetrics).

    python benchmarks/accuracy.py [--model DIR] [--data ../shared/data/ctc] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from napari_cosine_tracker.core.io import read_movie, slice_ctc_sequence, write_ctc_result
from napari_cosine_tracker.core.metrics import evaluate
from napari_cosine_tracker.core.pipeline import track_movie
from napari_cosine_tracker.core.reference import track_classical
from napari_cosine_tracker.core.train import kept_frames

SEQUENCES = ["Fluo-N2DH-SIM+/01", "Fluo-N2DH-GOWT1/01"]
MEASURES = ["SEG", "DET", "TRA", "LNK", "BC(0)", "CT", "TF"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{cpu}, {torch.get_num_threads()} torch threads, GPU: {gpu}, torch {torch.__version__}"


def held_out_window(seq_dir: Path, holdout: float) -> tuple[int, int]:
    n = len(list(seq_dir.glob("t*.tif")))
    return kept_frames(n, holdout), n


def run(method, movie_dir, gt_dir, work: Path, name: str, **kwargs) -> dict:
    movie = read_movie(movie_dir)
    start = time.perf_counter()
    result = method(movie, **kwargs)
    seconds = (time.perf_counter() - start) / len(movie)
    res = work / f"{name}_RES"
    write_ctc_result(res, result.labels, result.lineage)
    scores = evaluate(res, gt_dir)
    scores["s_per_frame"] = seconds
    if result.timings:
        scores["timings"] = {k: v / len(movie) for k, v in result.timings.items()}
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: shipped)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ctc"))
    parser.add_argument("--holdout", type=float, default=0.25, help="fraction of last frames held out (as in training)")
    parser.add_argument("--sequences", nargs="+", default=SEQUENCES)
    parser.add_argument("--frames", type=int, default=None, help="use only the first N held-out frames (quick runs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--json", default=None, help="write all numbers here")
    args = parser.parse_args(argv)

    data = Path(args.data)
    out = {"machine": machine(), "holdout": args.holdout, "sequences": {}}
    print(f"machine: {out['machine']}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="nct-acc-") as tmp:
        for seq in args.sequences:
            seq_dir = data / seq
            if not seq_dir.is_dir():
                print(f"skip {seq}: {seq_dir} not found", file=sys.stderr)
                continue
            start, stop = held_out_window(seq_dir, args.holdout)
            if args.frames:
                stop = min(stop, start + args.frames)
            work = Path(tmp) / seq.replace("/", "_")
            movie_dir, gt_dir = slice_ctc_sequence(seq_dir, start, stop, work)
            entry = {"frames": [start, stop - 1]}
            entry["cosine"] = run(track_movie, movie_dir, gt_dir, work, "cosine", model_dir=args.model, device=args.device)
            rows.append((seq, f"cosine (frames {start}-{stop - 1})", entry["cosine"]))
            if not args.no_reference:
                entry["reference"] = run(track_classical, movie_dir, gt_dir, work, "reference")
                rows.append((seq, "classical reference", entry["reference"]))
            out["sequences"][seq] = entry

    def fmt(v):
        return "  n/a" if v is None else f"{v:.3f}"

    header = f"{'sequence':<22} {'method':<28} " + " ".join(f"{m:>6}" for m in MEASURES) + f" {'s/frame':>8}"
    print(header)
    print("-" * len(header))
    for seq, method, s in rows:
        print(f"{seq:<22} {method:<28} " + " ".join(f"{fmt(s.get(m)):>6}" for m in MEASURES) + f" {s['s_per_frame']:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Foreground ROC-AUC of a model on held-out frames of the shared CTC sequences.

The model's foreground score is ``-embedding[0]`` (background is pinned to ``e_0``); the
frames are from the last quarter of each sequence, which training with the default
``--holdout 0.25`` leaves out. Frames a model trained on are skipped and said so (a score
there measures memory).

    python benchmarks/foreground_auc.py [--model DIR] [--data ../shared/data/ctc]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from napari_cosine_tracker.core.metrics import foreground_auc
from napari_cosine_tracker.core.model import read_model_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unseen_dataset import trained_frames  # noqa: E402

FRAMES = {"Fluo-N2DH-SIM+": [50, 55, 60, 64], "Fluo-N2DH-GOWT1": [72, 78, 85, 91]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: the shipped model)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ctc"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {}
    seen = trained_frames(read_model_config(args.model))
    for seq, frames in FRAMES.items():
        root = Path(args.data) / seq
        taken = [t for t in frames if any(t in r for r in seen.get(f"{seq}/01", ()))]
        if taken:
            print(f"{seq}: skipped, the model trained on frames {taken}", flush=True)
            continue
        aucs = {t: foreground_auc(root / "01", root / "01_GT", t, args.model) for t in frames}
        out[seq] = {"frames": aucs, "mean": float(np.mean(list(aucs.values()))),
                    "min": float(min(aucs.values()))}
        print(f"{seq}: " + ", ".join(f"{t}: {a:.3f}" for t, a in aucs.items())
              + f"  mean {out[seq]['mean']:.3f}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

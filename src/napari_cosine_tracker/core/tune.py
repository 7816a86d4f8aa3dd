"""Choose clustering parameters for a model on annotated frames it was trained on.

Coordinate descent over a small grid of the clustering parameters, each candidate scored with
the official CTC measures (mean of SEG, DET and TRA where the ground truth has them) on a
window of *training* frames, so held-out frames stay unseen. The winner is written to the
model's ``config.json`` as its recommended ``clustering`` section.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .cluster import ClusterParams
from .io import read_movie, slice_ctc_sequence, write_ctc_result
from .metrics import evaluate
from .pipeline import TrackingSession
from .train import kept_frames

__all__ = ["tune_clustering", "DEFAULT_GRID", "session_scorer", "descend"]

DEFAULT_GRID = {
    "fg_threshold": [0.0, 0.15, 0.3, 0.5, 0.7],
    "min_cluster_size": [50, 100, 200, 400],
    "min_samples": [4, 8, 16, 32],
    "coord_scale": [20.0, 30.0, 45.0, 90.0, 180.0],
    "min_object_size": [30, 60, 120, 240],
    "shrink": [0, 1, 2, 3],
}


def _score(scores: dict) -> float:
    vals = [scores[m] for m in ("SEG", "DET", "TRA") if scores.get(m) is not None]
    return float(np.mean(vals)) if vals else 0.0


def tune_clustering(model_dir, sequences, holdout=0.25, window=12, grid=None, device="auto", rounds=1, log=print,
                    min_gain=0.002, scale: float = 1.0) -> dict:
    """Tune the clustering on the last ``window`` training frames of each CTC sequence.

    Parameters
    ----------
    model_dir : path
        Model folder; its ``config.json`` gets the chosen ``clustering`` section.
    sequences : list of paths
        CTC image folders (``.../01``, ground truth in ``.../01_GT``).
    holdout : float
        Fraction of last frames held out of training (the window ends before them).
    min_gain : float
        A candidate replaces the current best only if it scores this much higher: a few
        training frames cannot tell smaller differences from noise.
    scale : float
        Resize factor the movies are tracked at (as ``track --scale``), e.g. for cells of
        another size than the model's.
    """
    grid = grid or DEFAULT_GRID
    model_dir = Path(model_dir)
    history = []
    with tempfile.TemporaryDirectory(prefix="nct-tune-") as tmp:
        sessions = []
        for seq in sequences:
            seq = Path(seq)
            keep = kept_frames(len(list(seq.glob("t*.tif"))), holdout)
            start = max(0, keep - window)
            work = Path(tmp) / f"{seq.parent.name}_{seq.name}"
            movie_dir, gt_dir = slice_ctc_sequence(seq, start, keep, work)
            session = TrackingSession(read_movie(movie_dir), model_dir, device=device, scale=scale)
            for _ in session.run_model():
                pass
            sessions.append((seq.parent.name, session, gt_dir, work))

        best, best_score = descend(session_scorer(sessions, history, log), sessions[0][1].params,
                                   grid, rounds=rounds, min_gain=min_gain)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["clustering"] = {k: getattr(best, k) for k in grid}
    config["tuning"] = {
        "score": best_score,
        "measure": "mean of SEG, DET, TRA on training frames",
        "window": window,
        "sequences": [str(Path(s).parent.name + "/" + Path(s).name) for s in sequences],
        "evaluated": len(history),
    }
    tmp = config_path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(config_path)
    return {"best": asdict(best), "score": best_score, "history": history}


def session_scorer(sessions, history: list, log=print):
    """A function scoring clustering parameters on ready sessions: the mean over
    ``sessions`` (``(name, TrackingSession with its network run done, CTC ground-truth
    folder, work folder)``) of the mean of SEG, DET and TRA. Each call re-tracks every
    session (the network does not run again) and appends its scores to ``history``. The
    sessions may hold different models: each is scored with the parameters given."""

    def score(params: ClusterParams) -> float:
        per = {}
        for name, session, gt_dir, work in sessions:
            for _ in session.track(params):
                pass
            if len(session.result.lineage) == 0:  # no cells at all: the worst score
                per[name] = {m: 0.0 for m in ("SEG", "DET", "TRA")}
                continue
            res = Path(work) / "RES"
            write_ctc_result(res, session.result.labels, session.result.lineage)
            s = evaluate(res, gt_dir, metrics=["SEG", "DET", "TRA"])
            per[name] = {m: s.get(m) for m in ("SEG", "DET", "TRA")}
        total = float(np.mean([_score(v) for v in per.values()]))
        history.append({"params": asdict(params), "score": total, "per_sequence": per})
        log(f"{total:.4f}  {per}  {asdict(params)}")
        return total

    return score


def descend(score, start: ClusterParams, grid: dict, rounds: int = 1,
            min_gain: float = 0.002) -> tuple[ClusterParams, float]:
    """Coordinate descent over ``grid`` from ``start``: each value of each parameter in turn,
    kept where it beats the best so far by ``min_gain``. Returns ``(best, its score)``."""
    best, best_score = start, score(start)
    for _ in range(rounds):
        for key, values in grid.items():
            for value in values:
                if getattr(best, key) == value:
                    continue
                candidate = replace(best, **{key: value})
                got = score(candidate)
                if got > best_score + min_gain:
                    best, best_score = candidate, got
    return best, best_score

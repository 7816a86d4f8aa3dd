"""Checkpoints of a long run, so that a killed ``track`` continues where it stopped.

A checkpoint is one ``checkpoint.npz`` (numpy arrays only, loaded with
``allow_pickle=False``): the recurrent network's state, the last frame's embeddings, the
embeddings of frames not yet handed over, the tracker's and the re-linker's state, and a
JSON description with the next frame to run and a fingerprint of the settings. It is written
to a temporary file and renamed over the previous one, so a kill at any moment leaves a
complete checkpoint (the previous one, or the new one). The frames already tracked sit beside
it as ``frames/TTTTT.npy`` and are simply written again if their frame is run again.

A resumed run gives exactly the result of an uninterrupted one: everything that decides the
result is restored bit for bit, and the clustering and linking are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CHECKPOINT", "partial_dir", "fingerprint", "save_checkpoint", "load_checkpoint"]

CHECKPOINT = "checkpoint.npz"


def partial_dir(output) -> Path:
    """Where a run writing ``output`` keeps its checkpoint: a hidden sibling folder."""
    output = Path(output)
    return output.with_name(f".{output.name}.partial")


def fingerprint(movie_shape, config: dict, scale: float, params, track_params, warmup: int) -> str:
    """A hash of what decides the result, so a checkpoint is only resumed by the same run."""
    from dataclasses import asdict

    desc = {"movie": list(movie_shape), "model": config, "scale": float(scale),
            "params": asdict(params), "track_params": asdict(track_params), "warmup": int(warmup)}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(folder, *, next_frame: int, fingerprint: str, stream, prev, kept: dict,
                    tracker, relinker, timings: dict) -> Path:
    """Write the checkpoint atomically into ``folder``; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for k, v in stream.get_state().items():
        arrays[f"stream/{k}"] = v.detach().cpu().numpy()
    if prev is not None:
        arrays["prev"] = prev
    for t, e in kept.items():
        arrays[f"kept/{t}"] = e
    t_arrays, t_meta = tracker.get_state()
    arrays.update({f"tracker/{k}": v for k, v in t_arrays.items()})
    r_meta = None
    if relinker is not None:
        r_arrays, r_meta = relinker.get_state()
        arrays.update({f"relinker/{k}": v for k, v in r_arrays.items()})
    meta = {"next_frame": int(next_frame), "fingerprint": fingerprint, "tracker": t_meta,
            "relinker": r_meta, "timings": timings, "kept": sorted(int(t) for t in kept)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    path = folder / CHECKPOINT
    tmp = folder / (CHECKPOINT + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(folder, expected_fingerprint: str):
    """``(meta, arrays)`` of the checkpoint in ``folder``, or None when there is none.

    Raises
    ------
    ValueError
        The checkpoint is damaged, or was written by a run with other settings (another
        movie, model, scale or clustering): the message says how to start over.
    """
    folder = Path(folder)
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: the checkpoint is damaged ({e}); delete {folder} and run "
                         "again without --resume to start over") from e
    if meta.get("fingerprint") != expected_fingerprint:
        raise ValueError(f"{path}: this checkpoint belongs to a run with other settings (movie, "
                         "model, scale or clustering); run with the same settings to resume, or "
                         "without --resume to start over")
    return meta, arrays


def sub(arrays: dict, prefix: str) -> dict:
    """The arrays saved under ``prefix/``, with the prefix taken off."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}

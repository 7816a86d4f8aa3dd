"""Project folders (``movie.tracks``): the base labels and lineage written once, the history
rewritten on every save, both without pickle and atomically; autosave locations."""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .actions import _REGISTRY, Action
from .diff import Diff, Patch

if TYPE_CHECKING:  # annotations only: the editor imports this module
    from .editor import TrackEditor

# Project files
# --------------------------------------------------------------------------------------

_STATE = "state.npz"


def _json_array(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as e:  # a damaged member fails in zlib or in numpy's header
        raise ValueError(f"{path} is not a readable project file: {e}") from e
    # np.load hands back members that are not .npy arrays as raw bytes: never use those (a
    # needed one that is missing is then reported as missing).
    return {k: v for k, v in data.items() if isinstance(v, np.ndarray)}


def _check_header(data: dict[str, np.ndarray], path: Path) -> dict:
    try:
        header = json.loads(data["header"].tobytes().decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt project file: no JSON header ({e})") from e
    if not isinstance(header, dict) or header.get("format") != PROJECT_FORMAT:
        raise ValueError(f"{path}: not a {PROJECT_FORMAT} file")
    if header.get("version") != PROJECT_VERSION:
        raise ValueError(f"{path}: project version {header.get('version')} is not supported "
                         f"(this program reads version {PROJECT_VERSION})")
    return header


def _pack(ed: TrackEditor) -> dict[str, np.ndarray]:
    actions_json: dict[str, list] = {"undo": [], "redo": []}
    p_act, p_box, olds, news = [], [], [], []
    rows = []
    k = 0
    for name, stack in (("undo", ed._undo), ("redo", ed._redo)):
        for a in stack:
            d = a.diff
            actions_json[name].append({"kind": a.kind, "params": a.params, "result": a.result})
            for p in d.patches:
                p_act.append(k)
                p_box.append((p.t, p.y0, p.x0, p.old.shape[0], p.old.shape[1]))
                olds.append(p.old.ravel())
                news.append(p.new.ravel())
            for i, (old, new) in d.rows.items():
                rows.append((k, i, old is not None, *(old or (0, 0, 0)),
                             new is not None, *(new or (0, 0, 0))))
            k += 1
    dt = ed._labels.dtype
    header = {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "base": ed._base_uid,
        "shape": list(ed.shape),
        "dtype": dt.str,
        "next_id": ed._next_id,
        "actions": actions_json,
        "meta": ed.meta,
    }
    try:
        header_array = _json_array(header)
    except TypeError as e:
        raise ValueError(f"editor.meta must be JSON-serialisable to be saved: {e}") from e
    return {
        "header": header_array,
        "lineage": ed.lineage,
        "patch_action": np.asarray(p_act, np.int64),
        "patch_box": np.asarray(p_box, np.int64).reshape(-1, 5),
        "patch_old": np.concatenate(olds).astype(dt) if olds else np.zeros(0, dt),
        "patch_new": np.concatenate(news).astype(dt) if news else np.zeros(0, dt),
        "rows": np.asarray(rows, np.int64).reshape(-1, 10),
    }


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from ..io import atomic_file

    with atomic_file(path) as f:
        np.savez_compressed(f, **arrays)


def _unpack(data: dict[str, np.ndarray], header: dict, shape, dtype, path: Path
            ) -> tuple[list[Action], list[Action]]:
    def bad(msg: str) -> ValueError:
        return ValueError(f"{path}: corrupt project file: {msg}")

    need = {"lineage", "patch_action", "patch_box", "patch_old", "patch_new", "rows"}
    if missing := need - set(data):
        raise bad(f"missing arrays {sorted(missing)}")
    acts = header.get("actions")
    if not isinstance(acts, dict) or not all(isinstance(acts.get(k), list) for k in ("undo", "redo")):
        raise bad("no action lists")
    n_undo, n_redo = len(acts["undo"]), len(acts["redo"])
    actions: list[Action] = []
    for spec in acts["undo"] + acts["redo"]:
        cls = _REGISTRY.get(spec.get("kind")) if isinstance(spec, dict) else None
        if cls is None or not isinstance(spec.get("params"), dict):
            raise bad(f"unknown action {spec.get('kind') if isinstance(spec, dict) else spec!r}")
        a = cls.__new__(cls)
        Action.__init__(a, **spec["params"])
        a.result = spec.get("result")
        a.diff = Diff()
        actions.append(a)
    T, H, W = shape
    box, pa = data["patch_box"], data["patch_action"]
    olds, news = data["patch_old"], data["patch_new"]
    if len(box) != len(pa) or box.ndim != 2 or box.shape[1] != 5:
        raise bad("patch tables do not match")
    off = 0
    for k, (t, y0, x0, h, w) in zip(pa.tolist(), box.tolist()):
        if not (0 <= k < len(actions) and 0 <= t < T and 0 <= y0 and y0 + h <= H
                and 0 <= x0 and x0 + w <= W and h > 0 and w > 0):
            raise bad(f"patch outside the movie: action {k}, frame {t}, box {y0, x0, h, w}")
        n = h * w
        if off + n > len(olds) or off + n > len(news):
            raise bad("patch values are truncated")
        actions[k].diff.patches.append(Patch(
            t, y0, x0, olds[off : off + n].reshape(h, w).astype(dtype),
            news[off : off + n].reshape(h, w).astype(dtype)))
        off += n
    rows = data["rows"]
    if rows.ndim != 2 or rows.shape[1] != 10:
        raise bad("lineage change table has the wrong shape")
    for k, i, ho, of, ol, op, hn, nf, nl, np_ in rows.tolist():
        if not 0 <= k < len(actions):
            raise bad(f"row for unknown action {k}")
        actions[k].diff.rows[i] = ((of, ol, op) if ho else None, (nf, nl, np_) if hn else None)
    return actions[:n_undo], actions[n_undo : n_undo + n_redo]


PROJECT_FORMAT = "napari-cosine-tracker-project"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".tracks"
#: napari layer metadata key: the project folder a Labels layer was opened from
PROJECT_KEY = "project_path"


def default_project_path(movie_path: str | os.PathLike) -> Path:
    """Project folder beside a movie: ``<movie>.tracks`` (``01/`` -> ``01.tracks/``)."""
    p = Path(movie_path)
    return p.parent / (p.name.rstrip("/") + PROJECT_SUFFIX)


def is_project(path) -> bool:
    """``path`` is a project folder saved by :meth:`TrackEditor.save` (``*.tracks``)."""
    return Path(path).is_dir() and (Path(path) / "state.npz").is_file()


#: Environment variable naming the folder for autosaves of movies without a file.
AUTOSAVE_ENV = "NAPARI_COSINE_TRACKER_AUTOSAVE"


def autosave_root() -> Path:
    """Per-user folder for the corrections of movies that have no file (an array made in
    Python, a layer from another plugin): ``$NAPARI_COSINE_TRACKER_AUTOSAVE``, else the
    platform's user data folder (``~/.local/share/napari-cosine-tracker/autosave`` on Linux)."""
    if os.environ.get(AUTOSAVE_ENV):
        return Path(os.environ[AUTOSAVE_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-cosine-tracker")) / "autosave"


def data_fingerprint(data) -> str:
    """A short hash that recognises the same movie (or labels) when opened again: its
    shape, pixel type and the pixels of its first, middle and last frames."""
    import hashlib

    h = hashlib.sha256(f"{tuple(data.shape)} {np.dtype(data.dtype).str}".encode())
    n = int(data.shape[0])
    for t in sorted({0, n // 2, n - 1}):
        h.update(np.ascontiguousarray(np.asarray(data[t])).tobytes())
    return h.hexdigest()[:20]


def autosave_project_path(data) -> Path:
    """Where the corrections of a movie without a file are autosaved (see
    :func:`autosave_root`), keyed by :func:`data_fingerprint` of ``data``."""
    return autosave_root() / (data_fingerprint(data) + PROJECT_SUFFIX)

"""Export tracked labels + lineage to CTC, GEFF and CSV.

Every cell of the result (a track id in one frame) is one row/node with its centroid
``(y, x)`` in pixels and its area in pixels, as :func:`skimage.measure.regionprops` would
give them. All writes are atomic: the output is built under a temporary name beside the
target and renamed into place, so an interrupted export never leaves a half-written file.

* **CTC**: a ``res_track.txt`` + ``mask###.tif`` folder, written by :mod:`.io`.
* **GEFF** (https://liveimagetrackingtools.org/geff): a zarr store holding the cell graph
  (``tracks.geff``) and the labels it links to (``segmentation``), laid out as funtracks
  writes it; see :mod:`.geffio`, which also reads GEFFs back.
* **CSV**: ``id, parent_id, track_id, parent_track_id, frame, y, x, area``: one row per cell
  per frame; ``id`` is the GEFF node id, ``parent_id`` the cell before it (same track a frame
  earlier, or the mother's last cell; empty = none), as funtracks' table import expects.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FORMATS",
    "FUNTRACKS_NODE_NAME_MAP",
    "CellTable",
    "cell_table",
    "export",
    "export_csv",
    "export_ctc",
    "export_geff",
    "export_result",
]

FORMATS = ("ctc", "geff", "csv")

#: How funtracks' table import (``tracks_from_df(df, segmentation, node_name_map=...)``, the
#: data model of motile_tracker) reads our CSV. Its own guess from the column names maps
#: measurement columns onto its features (``speed`` -> seg_id, ``track_duration`` ->
#: tracklet_id), so the names are given.
FUNTRACKS_NODE_NAME_MAP = {"id": "id", "parent_id": "parent_id", "time": "frame",
                           "pos": ["y", "x"], "seg_id": "track_id"}


@dataclass
class CellTable:
    """One entry per cell (track id in one frame), sorted by ``(track_id, frame)``."""

    track_id: np.ndarray  # int64
    frame: np.ndarray  # int64
    y: np.ndarray  # float64, centroid row
    x: np.ndarray  # float64, centroid column
    area: np.ndarray  # int64, pixels

    def __len__(self) -> int:
        return len(self.track_id)


def _check(labels, lineage) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)  # a lazy io.Movie is read here
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer (T, Y, X) array, got {labels.dtype} {labels.shape}")
    lin = np.asarray(lineage, dtype=np.int64).reshape(-1, 4) if np.size(lineage) else np.zeros((0, 4), np.int64)
    return labels, lin


def cell_table(labels: np.ndarray, lineage: np.ndarray | None = None) -> CellTable:
    """Centroid and area of every cell of a tracked label stack (one pass per frame).

    ``lineage`` is only checked: every label must have a row, else ``ValueError``.
    """
    from .link import cell_features  # the one place cells' centroids and areas are measured

    cells = cell_features(np.asarray(labels))
    track_id, frame, area = cells.label, cells.frame.astype(np.int64), cells.area.astype(np.int64)
    y, x = cells.y.astype(float), cells.x.astype(float)
    order = np.lexsort((frame, track_id))
    table = CellTable(track_id[order], frame[order], y[order], x[order], area[order])
    if lineage is not None:
        known = set(np.asarray(lineage, np.int64).reshape(-1, 4)[:, 0].tolist())
        missing = sorted(set(np.unique(table.track_id).tolist()) - known)
        if missing:
            raise ValueError(f"labels {missing[:10]} have no lineage row; the result is inconsistent")
    return table


# --------------------------------------------------------------------------------------
# Atomic helpers
# --------------------------------------------------------------------------------------


def _replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move a finished folder or file into place; an old ``out`` is removed only afterwards."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    from .io import _swap_in

    _swap_in(tmp, out)


def _public_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """mkstemp/mkdtemp create owner-only paths; give the result the usual umask mode."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if folder else 0o666) & ~mask)


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")


# --------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------


def export_ctc(out_dir: str | os.PathLike, labels: np.ndarray, lineage: np.ndarray) -> Path:
    """CTC result folder (``res_track.txt`` + masks) through :func:`.io.write_ctc_result`."""
    from . import io

    return Path(io.write_ctc_result(out_dir, labels, np.asarray(lineage, np.int64).reshape(-1, 4)))


def export_csv(out: str | os.PathLike, labels: np.ndarray, lineage: np.ndarray, *,
               images=None, pixel_size=None, frame_interval=None, space_unit: str = "um",
               time_unit: str = "min", overwrite: bool = False) -> Path:
    """CSV with one row per cell per frame: ``id, parent_id, track_id, parent_track_id, frame,
    y, x, area``, then measurements (:mod:`.measure`): ``mean_intensity`` (with ``images``),
    ``speed``, the track's ``track_duration`` and ``generation``, and with a pixel size /
    frame interval ``time_min, y_um, x_um, area_um2`` (named after the units).

    ``id`` is unique in the movie and equals the GEFF export's node id; ``parent_id`` is the
    same track's cell in the frame before, or, on a track's first frame, its mother's last
    cell (empty: none), so a spreadsheet or pandas can walk a lineage cell by cell, and
    funtracks' table import (motile_tracker) reads it as a graph with
    :data:`FUNTRACKS_NODE_NAME_MAP`. ``track_id`` is the label value of the cell in the CTC
    masks; ``parent_track_id`` its mother track (0: none). Positions and areas are in pixels; speed in (space unit or px) per (time unit or frame).

    ``overwrite``: replace an existing ``out`` (atomically), else ``FileExistsError``.
    """
    from .measure import Calibration, cell_measurements, track_measurements

    labels, lin = _check(labels, lineage)
    if images is not None and tuple(images.shape) != labels.shape:
        raise ValueError(f"the movie ({tuple(images.shape)}) and the masks {labels.shape} differ "
                         "in shape; give the movie these cells were tracked on")
    out = Path(out)
    _check_target(out, overwrite)
    cal = Calibration.of(pixel_size, frame_interval, space_unit=space_unit, time_unit=time_unit)
    cells = cell_measurements(labels, lin, images, cal)
    tracks = track_measurements(labels, lin, cal, cells=cells)
    per_track = {int(i): k for k, i in enumerate(tracks["track_id"].tolist())}
    table = cell_table(labels, lin)
    parent = dict(zip(lin[:, 0].tolist(), lin[:, 3].tolist()))
    cell_id, parent_cell = _cell_ids(table, lin)
    columns = ["id", "parent_id", "track_id", "parent_track_id", "frame", "y", "x", "area"]
    extra = [c for c in cells if c not in ("track_id", "frame", "y", "x", "area")]
    k_of = np.array([per_track[int(i)] for i in table.track_id.tolist()], np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)

    def num(v):
        v = float(v)
        return "" if not np.isfinite(v) else round(v, 6)

    from .io import atomic_file

    with atomic_file(out, "w") as f:
        w = csv.writer(f)
        w.writerow(columns + extra + ["track_duration", "generation"])
        for r, (c, i, t, y, x, a, pc) in enumerate(zip(
                cell_id.tolist(), table.track_id.tolist(), table.frame.tolist(),
                table.y.tolist(), table.x.tolist(), table.area.tolist(),
                parent_cell.tolist())):
            k = k_of[r]
            w.writerow([c, pc or "", i, parent.get(i, 0), t, round(y, 6), round(x, 6), a]
                       + [num(cells[e][r]) for e in extra]
                       + [num(tracks["duration"][k]), int(tracks["generation"][k])])
    return out


def _cell_ids(table: CellTable, lin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's id (1..N in the table's (track, frame) order: the GEFF node ids) and its
    predecessor's id (the track's cell the frame before, or the mother's last cell; 0)."""
    n = len(table)
    cell_id = np.arange(1, n + 1, dtype=np.int64)
    key = {(i, t): k for k, (i, t) in enumerate(zip(table.track_id.tolist(), table.frame.tolist()))}
    pred = np.zeros(n, np.int64)
    rows = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in lin}
    for k, (i, t) in enumerate(zip(table.track_id.tolist(), table.frame.tolist())):
        if (i, t - 1) in key:
            pred[k] = cell_id[key[(i, t - 1)]]
        elif i in rows and rows[i][2] and rows[i][0] == t:
            p = rows[i][2]
            if p in rows and (p, rows[p][1]) in key:
                pred[k] = cell_id[key[(p, rows[p][1])]]
    return cell_id, pred


def _lineage_ids(lin: np.ndarray) -> dict[int, int]:
    parent = dict(zip(lin[:, 0].tolist(), lin[:, 3].tolist()))
    root: dict[int, int] = {}
    for i in parent:
        chain, j = [], i
        while j in parent and parent[j] != 0 and j not in root and len(chain) <= len(parent):
            chain.append(j)
            j = parent[j]
        r = root.get(j, j)
        for k in chain:
            root[k] = r
        root[i] = r
    return root


def export_geff(out, labels, lineage, **kwargs) -> Path:
    """GEFF store with the segmentation linked; see :func:`.geffio.export_geff`."""
    from .geffio import export_geff as _export_geff

    return _export_geff(out, labels, lineage, **kwargs)


def export(labels: np.ndarray, lineage: np.ndarray, fmt: str, out: str | os.PathLike,
           **kwargs) -> Path:
    """Write ``labels`` + ``lineage`` in ``fmt`` (one of :data:`FORMATS`) to ``out``."""
    fmt = str(fmt).lower()
    if fmt == "ctc":
        # io.write_ctc_result replaces only a folder that holds nothing but a CTC result.
        extra = set(kwargs) - {"overwrite"}
        if extra:
            raise ValueError(f"options {sorted(extra)} do not apply to the CTC format")
        return export_ctc(out, labels, lineage)
    if fmt == "geff":
        return export_geff(out, labels, lineage, **kwargs)
    if fmt == "csv":
        return export_csv(out, labels, lineage, **kwargs)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def export_result(res_dir: str | os.PathLike, fmt: str, out: str | os.PathLike, **kwargs) -> Path:
    """Convert a CTC result folder (``res_track.txt`` + ``mask*.tif``), or a saved project
    folder (``*.tracks``, its current corrected state), to ``fmt`` at ``out``."""
    from . import io

    from .edit import TrackEditor, is_project

    res_dir = Path(res_dir)
    if not res_dir.is_dir():
        raise FileNotFoundError(f"result folder not found: {res_dir}")
    if is_project(res_dir):  # a saved project (*.tracks): its corrected cells and lineage
        ed = TrackEditor.open(res_dir)
        return export(ed.labels, ed.lineage, fmt, out, **kwargs)
    labels, lineage = io.read_ctc_result(res_dir)
    if str(fmt).lower() != "ctc":  # CTC is copied frame by frame, never the whole stack
        labels = np.asarray(labels)
    return export(labels, np.asarray(lineage), fmt, out, **kwargs)

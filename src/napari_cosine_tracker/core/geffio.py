"""GEFF both ways: tracked labels + lineage to a GEFF store with its segmentation, and back.

**Layout written** (the one funtracks' ``export_to_geff`` writes, so motile_tracker users find
what they know)::

    tracks.zarr/                 a zarr group
        tracks.geff/             the graph (geff.core_io.write_arrays)
        segmentation             (T, Y, X) labels, one chunk per frame; values = track ids

The graph's nodes are the cells (one per track and frame: ``t, y, x, area, track_id,
lineage_id, seg_id``, and with the segmentation each cell's ``mask`` and ``bbox``, which
funtracks rebuilds its segmentation from; ids from 1), its edges link each cell to the same track's cell in the
next frame and a mother's last cell to each daughter's first. ``related_objects`` points to
the segmentation with ``node_prop = "seg_id"`` (the label value of the node's mask in its
frame). Positions stay in pixels; with a pixel size the axes carry ``scale`` and
``scaled_unit``, and ``extra.tracksdata`` records the segmentation's ``shape`` and spatial
``scale``, which funtracks reads as ``Tracks.scale``.

**Read**: :func:`read_geff` opens our stores and GEFFs written by others (funtracks,
``geff.convert.from_ctc_to_geff``): the graph becomes CTC tracks (a chain of single links
between consecutive frames is one track; a cell with several successors divides; a jump over
frames starts a new track whose parent is the one before), and a linked ``labels`` object is
relabelled to those track ids. Merges (a cell with two predecessors) have no CTC form: the
merged cell starts a new track without parent and :attr:`GeffTracks.merges` counts them.

Every write is atomic (built beside the target, then renamed into place).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["GeffTracks", "GeffError", "export_geff", "find_geff", "is_geff", "read_geff",
           "SEGMENTATION", "GRAPH"]

GRAPH = "tracks.geff"  # the graph group inside the store (funtracks' name)
SEGMENTATION = "segmentation"  # the labels array beside it


class GeffError(ValueError):
    """A path is not a GEFF store this package can read, with what to do about it."""


def export_geff(out: str | os.PathLike, labels: np.ndarray, lineage: np.ndarray, *,
                pixel_size: float | tuple[float, float] | None = None,
                space_unit: str = "micrometer", frame_interval: float | None = None,
                time_unit: str = "minute", overwrite: bool = False,
                zarr_format: int = 2, segmentation: bool = True) -> Path:
    """Write a GEFF store at ``out`` (see the module docstring) and return ``out``.

    Parameters
    ----------
    out : path
        The zarr folder to create (e.g. ``tracks.zarr``); the graph is ``out/tracks.geff``.
    pixel_size : float or (float, float), optional
        Physical size of a pixel (y, x) in ``space_unit``; stored as the axes' ``scale``.
        Positions stay in pixels, so they align with the label masks.
    frame_interval : float, optional
        Time between frames in ``time_unit``; stored as the time axis' ``scale``.
    overwrite : bool
        Replace an existing ``out`` (only after the new store is complete).
    segmentation : bool
        Also write the labels (``out/segmentation``) and link them from the graph.
    """
    import geff
    import zarr
    from geff_spec import Axis, DisplayHint, GeffMetadata, RelatedObject

    from .export import _check, _check_target, _lineage_ids, _public_mode, _replace_dir, cell_table

    labels, lin = _check(labels, lineage)
    out = Path(out)
    _check_target(out, overwrite)
    table = cell_table(labels, lin)
    n = len(table)
    # Ids from 1: funtracks (motile_tracker) reserves 0 and shifts a graph that uses it.
    node_ids = np.arange(1, n + 1, dtype=np.int64)
    key = {(i, t): k for k, (i, t) in enumerate(zip(table.track_id.tolist(), table.frame.tolist()))}
    src, dst = [], []
    for k in range(n - 1):  # table is sorted by (track, frame): neighbours within a track
        if table.track_id[k] == table.track_id[k + 1] and table.frame[k + 1] == table.frame[k] + 1:
            src.append(k)
            dst.append(k + 1)
    rows = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in lin}
    for i, (f, _, p) in rows.items():
        if p and p in rows and (p, rows[p][1]) in key and (i, f) in key:
            src.append(key[(p, rows[p][1])])
            dst.append(key[(i, f)])
    edge_ids = np.array([src, dst], dtype=np.int64).T.reshape(-1, 2) + 1  # row k is node k + 1
    roots = _lineage_ids(lin)
    lineage_id = np.array([roots.get(i, i) for i in table.track_id.tolist()], dtype=np.int64)

    def prop(v):
        return {"values": np.asarray(v), "missing": None}

    node_props = {
        "t": prop(table.frame),
        "y": prop(table.y),
        "x": prop(table.x),
        "area": prop(table.area),
        "track_id": prop(table.track_id),
        "lineage_id": prop(lineage_id),
        "seg_id": prop(table.track_id),
    }
    if segmentation:
        node_props.update(_node_masks(labels, table))
    # Positions are in pixels and frames (unit); the calibration is scale + scaled_unit.
    if pixel_size is None:
        sy = sx = None
    else:
        sy, sx = (float(pixel_size),) * 2 if np.isscalar(pixel_size) else map(float, pixel_size)
    dt = None if frame_interval is None else float(frame_interval)
    T, H, W = labels.shape
    axes = [
        Axis(name="t", type="time", unit="frame", scale=dt,
             scaled_unit=time_unit if dt is not None else None),
        Axis(name="y", type="space", unit="pixel", scale=sy,
             scaled_unit=space_unit if sy is not None else None),
        Axis(name="x", type="space", unit="pixel", scale=sx,
             scaled_unit=space_unit if sx is not None else None),
    ]
    # funtracks reads the segmentation's shape and spatial scale from tracksdata's entry.
    tracksdata = {"shape": [T, H, W]}
    if sy is not None:
        tracksdata["scale"] = [sy, sx]
    related = ([RelatedObject(type="labels", path=f"../{SEGMENTATION}", node_prop="seg_id")]
               if segmentation else None)
    meta = GeffMetadata(
        directed=True,
        axes=axes,
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props={"tracklet": "track_id", "lineage": "lineage_id"},
        related_objects=related,
        display_hints=DisplayHint(display_horizontal="x", display_vertical="y", display_time="t"),
        extra={"tracksdata": tracksdata,
               "napari-cosine-tracker": {"segmentation_shape": [T, H, W],
                                         "seg_id": "label value of the cell in the segmentation"}},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        if segmentation:
            dtype = np.uint32 if labels.max(initial=0) <= np.iinfo(np.uint32).max else np.uint64
            seg = root.create_array(SEGMENTATION, shape=labels.shape, chunks=(1, H, W),
                                    dtype=dtype, fill_value=0)
            for t in range(T):  # one frame at a time: memory stays one frame's worth
                seg[t] = np.asarray(labels[t]).astype(dtype, copy=False)
        geff.core_io.write_arrays(
            str(tmp / GRAPH), node_ids, node_props, edge_ids, None, meta,
            zarr_format=zarr_format, overwrite=True,
        )
        # The older place motile_tracker looks for the shape (funtracks writes it too).
        zarr.open_group(str(tmp / GRAPH), mode="a").attrs["segmentation_shape"] = [T, H, W]
        _public_mode(tmp, folder=True)
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _node_masks(labels: np.ndarray, table) -> dict:
    """Every cell's own mask and bounding box as node properties, in funtracks' layout.

    funtracks (motile_tracker) rebuilds the segmentation from these two properties when it
    opens a GEFF (``mask``: the cell's boolean crop, a varlength property; ``bbox``:
    ``[min_y, min_x, max_y, max_x]``, max exclusive), so it needs no ``segmentation_path``.
    The labels array stays beside the graph for every other reader (``related_objects``).
    """
    from geff.core_io import construct_var_len_props
    from scipy import ndimage as ndi

    masks: list = [None] * len(table)
    bbox = np.zeros((len(table), 4), np.int64)
    where = {(int(i), int(f)): k for k, (i, f) in
             enumerate(zip(table.track_id.tolist(), table.frame.tolist()))}
    for f in np.unique(table.frame).tolist():
        frame = np.asarray(labels[f])
        for i, box in enumerate(ndi.find_objects(frame), start=1):
            k = where.get((i, f)) if box is not None else None
            if k is None:
                continue
            masks[k] = frame[box] == i
            bbox[k] = [box[0].start, box[1].start, box[0].stop, box[1].stop]
    return {"mask": construct_var_len_props(masks), "bbox": {"values": bbox, "missing": None}}


# -- reading -----------------------------------------------------------------------------------


def _has_geff_attrs(path: Path) -> bool:
    import json

    for name in (".zattrs", "zarr.json"):
        f = path / name
        if f.is_file():
            try:
                attrs = json.loads(f.read_text())
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", attrs)  # zarr v3 keeps them under "attributes"
            return "geff" in attrs
    return False


def find_geff(path) -> Path | None:
    """The GEFF graph group at ``path``: ``path`` itself, or the one graph group inside it
    (``tracks.geff`` in our and funtracks' stores); None if there is none."""
    path = Path(path)
    if not path.is_dir():
        return None
    if _has_geff_attrs(path):
        return path
    if _has_geff_attrs(path / GRAPH):
        return path / GRAPH
    inner = [p for p in sorted(path.iterdir()) if p.is_dir() and _has_geff_attrs(p)]
    return inner[0] if len(inner) == 1 else None


def is_geff(path) -> bool:
    """``path`` is a GEFF store (or holds exactly one GEFF graph)."""
    return find_geff(path) is not None


@dataclass
class GeffTracks:
    """A GEFF read as CTC tracks.

    Attributes
    ----------
    lineage : (N, 4) int64
        ``id, first frame, last frame, parent id`` per track.
    cells : (M, 4) float64
        ``track_id, t, y, x`` per node (pixels), sorted by track then time: Tracks layer data.
    labels : (T, Y, X) array or None
        The linked segmentation relabelled to the track ids; None when the GEFF has none.
    pixel_size : (float, float) or None
        ``y, x`` pixel size in ``space_unit`` from the axes' scale.
    frame_interval : float or None
        Time between frames in ``time_unit``.
    merges : int
        Cells with more than one predecessor (started as new tracks without parent).
    """

    lineage: np.ndarray
    cells: np.ndarray
    labels: np.ndarray | None = None
    pixel_size: tuple | None = None
    space_unit: str | None = None
    frame_interval: float | None = None
    time_unit: str | None = None
    merges: int = 0
    notes: list = field(default_factory=list)


def _axes(meta, props) -> tuple[str, list[str], dict]:
    """(time prop, [y prop, x prop], axes by name) from the metadata (or the usual names)."""
    axes = {a.name: a for a in (meta.axes or [])}
    time = [a.name for a in axes.values() if a.type == "time"]
    space = [a.name for a in axes.values() if a.type == "space"]
    time = time[0] if time else next((n for n in ("t", "time", "frame") if n in props), None)
    if not space:
        space = [n for n in ("z", "y", "x") if n in props]
    if time is None or len(space) < 2:
        raise GeffError("the GEFF's nodes have no time and (y, x) position properties "
                        f"(found {sorted(props)}); declare them as axes of type time/space")
    if len(space) > 2:
        raise GeffError(f"the GEFF is {len(space)}-D in space ({space}); only 2-D movies "
                        "(t, y, x) are supported")
    return time, space, axes


def read_geff(path) -> GeffTracks:
    """Read a GEFF store (ours, funtracks', geff.convert's) as CTC tracks; see the module
    docstring. Raises :class:`GeffError` with what to do when it cannot."""
    import geff

    group = find_geff(path)
    if group is None:
        raise GeffError(f"{path} is not a GEFF store (no zarr group with 'geff' metadata "
                        "in it or in a tracks.geff folder inside it)")
    try:
        mem = geff.core_io.read_to_memory(str(group))
    except Exception as e:  # noqa: BLE001 - geff raises many kinds on a broken store
        raise GeffError(f"{group} could not be read as GEFF ({e}); check it with "
                        "geff.validate_structure") from e
    meta = mem["metadata"]
    props = {k: np.asarray(v["values"]) for k, v in mem["node_props"].items()}
    ids = np.asarray(mem["node_ids"]).astype(np.int64)
    edges = np.asarray(mem["edge_ids"]).astype(np.int64).reshape(-1, 2)
    time, space, axes = _axes(meta, props)
    t = np.rint(props[time]).astype(np.int64)
    if len(ids) and t.min() < 0:
        raise GeffError(f"{group}: negative frame numbers in '{time}'")
    y, x = (props[a].astype(np.float64) for a in space)
    n = len(ids)
    index = {int(v): k for k, v in enumerate(ids.tolist())}
    try:
        e_src = np.array([index[int(a)] for a in edges[:, 0]], np.int64)
        e_dst = np.array([index[int(b)] for b in edges[:, 1]], np.int64)
    except KeyError as e:
        raise GeffError(f"{group}: an edge names node {e.args[0]}, which is not a node") from None
    forward = t[e_dst] > t[e_src]
    if not forward.all():
        raise GeffError(f"{group}: {int((~forward).sum())} edges do not go forward in time; "
                        "a tracking graph links each cell to later cells")
    out_deg = np.bincount(e_src, minlength=n)
    in_deg = np.bincount(e_dst, minlength=n)

    # Chains of single links between consecutive frames are tracks; the rest start new ones.
    track = np.zeros(n, np.int64)
    parent_node = np.full(n, -1, np.int64)
    pred = np.full(n, -1, np.int64)
    pred[e_dst[in_deg[e_dst] == 1]] = e_src[in_deg[e_dst] == 1]
    merges = int((in_deg > 1).sum())
    next_id = 0
    for k in np.lexsort((ids, t)).tolist():
        p = pred[k]
        if p >= 0 and out_deg[p] == 1 and t[k] == t[p] + 1:
            track[k] = track[p]
        else:
            next_id += 1
            track[k] = next_id
            parent_node[k] = p
    # Keep the file's own track ids where they describe the same tracks (a round trip of a
    # CTC result gives back its ids); otherwise number tracks in order of appearance.
    tracklet = (meta.track_node_props or {}).get("tracklet")
    if tracklet in props:
        own = np.rint(props[tracklet]).astype(np.int64)
        pairs = np.unique(np.column_stack([track, own]), axis=0)
        if (own > 0).all() and len(pairs) == next_id == len(np.unique(pairs[:, 1])):
            track = own
    first = {}
    for k in np.argsort(t, kind="stable").tolist():
        first.setdefault(int(track[k]), k)
    lineage = []
    for tid, k in sorted(first.items()):
        frames = t[track == tid]
        p = parent_node[k]
        lineage.append([tid, int(frames.min()), int(frames.max()), int(track[p]) if p >= 0 else 0])
    lineage = np.array(lineage, np.int64).reshape(-1, 4)
    order = np.lexsort((t, track))
    cells = np.column_stack([track, t, y, x]).astype(np.float64)[order]

    ax_y, ax_x = axes.get(space[0]), axes.get(space[1])
    ax_t = axes.get(time)
    pixel_size = (None if ax_y is None or ax_y.scale is None
                  else (float(ax_y.scale), float(ax_x.scale if ax_x.scale is not None else ax_y.scale)))
    result = GeffTracks(
        lineage=lineage, cells=cells, pixel_size=pixel_size,
        space_unit=(ax_y.scaled_unit or ax_y.unit) if ax_y is not None and pixel_size else None,
        frame_interval=None if ax_t is None or ax_t.scale is None else float(ax_t.scale),
        time_unit=(ax_t.scaled_unit or ax_t.unit) if ax_t is not None and ax_t.scale else None,
        merges=merges)
    if merges:
        result.notes.append(f"{merges} cells have two or more predecessors (merges); each "
                            "starts a new track without parent, as CTC has no merges")
    result.labels = _read_labels(group, meta, props, ids, t, track, result.notes)
    return result


def _read_labels(group: Path, meta, props, ids, t, track, notes) -> np.ndarray | None:
    """The GEFF's linked ``labels`` object relabelled to track ids, or None."""
    import zarr

    objects = [o for o in (meta.related_objects or []) if o.type == "labels"]
    where = (group / objects[0].path).resolve() if objects else None
    if where is None or not where.exists():
        if "mask" in props and "bbox" in props:  # cells' own masks (funtracks, tracksdata)
            return _labels_from_masks(group, meta, props, t, track, notes)
        notes.append("no segmentation is linked (related_objects): tracks only" if where is None
                     else f"the linked segmentation {objects[0].path} is missing")
        return None
    obj = objects[0]
    try:
        seg = zarr.open_array(str(where), mode="r")
    except Exception as e:  # noqa: BLE001 - zarr's errors vary by version
        raise GeffError(f"{where}: the linked segmentation is not a zarr array ({e})") from e
    shape = tuple(seg.shape)
    if len(shape) > 3 and all(s == 1 for s in shape[1:-2]):
        shape = (shape[0],) + shape[-2:]  # (T, 1, Y, X) and the like: 2-D movies
    if len(shape) != 3:
        raise GeffError(f"{where}: segmentation of shape {tuple(seg.shape)}; only (T, Y, X) "
                        "movies are supported")
    prop = obj.node_prop or obj.label_prop
    value = ids if prop is None else np.rint(props[prop]).astype(np.int64)
    labels = np.zeros(shape, np.uint32 if track.max(initial=0) < 2**32 else np.uint64)
    for f in range(min(shape[0], int(t.max(initial=-1)) + 1)):
        here = t == f
        if not here.any():
            continue
        frame = np.asarray(seg[f]).reshape(shape[1:]).astype(np.int64)
        keys, lut = value[here], track[here]
        sort = np.argsort(keys)
        keys, lut = keys[sort], lut[sort]
        pos = np.clip(np.searchsorted(keys, frame), 0, len(keys) - 1)
        hit = (keys[pos] == frame) & (frame != 0)
        labels[f][hit] = lut[pos[hit]]
    return labels


def _labels_from_masks(group: Path, meta, props, t, track, notes) -> np.ndarray:
    """Paint each node's ``mask`` at its ``bbox`` (funtracks' embedded segmentation) with its
    track id. The movie's shape comes from the metadata, else from the masks' extent."""
    import zarr

    extra = meta.extra or {}
    shape = (extra.get("tracksdata") or {}).get("shape")
    if shape is None:
        shape = dict(zarr.open_group(str(group), mode="r").attrs).get("segmentation_shape")
    bbox = np.asarray(props["bbox"], np.int64).reshape(len(t), -1)
    if bbox.shape[1] != 4:
        raise GeffError(f"{group}: 'bbox' has {bbox.shape[1]} values per cell; only 2-D "
                        "masks ([min_y, min_x, max_y, max_x]) are supported")
    if shape is None:
        shape = (int(t.max(initial=-1)) + 1, int(bbox[:, 2].max(initial=0)),
                 int(bbox[:, 3].max(initial=0)))
        notes.append("the movie's size is not recorded; the masks' extent is used")
    shape = tuple(int(v) for v in shape)
    labels = np.zeros(shape, np.uint32 if track.max(initial=0) < 2**32 else np.uint64)
    for k, mask in enumerate(props["mask"]):
        y0, x0, y1, x1 = bbox[k]
        mask = np.asarray(mask, bool).reshape(y1 - y0, x1 - x0)
        labels[t[k], y0:y1, x0:x1][mask] = track[k]
    return labels

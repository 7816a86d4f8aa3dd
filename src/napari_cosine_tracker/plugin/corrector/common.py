"""What the correction widget's parts share: layer names, the keyboard shortcuts, small
drawing helpers."""

from __future__ import annotations

import numpy as np
from qtpy.QtGui import QColor

SELECTION_LAYER = "selected track"
LINE_LAYER = "cut line"

#: action -> (button text, napari key, tooltip). Keys are free in napari's Labels keymap.
SHORTCUTS = {
    "delete_cell": ("Delete cell", "Delete", "Remove the selected cell from this frame."),
    "delete_track": ("Delete track", "Shift-Delete",
                     "Remove the selected track in every frame (its daughters keep going)."),
    "merge": ("Merge with 2nd", "G",
              "Join the second selected cell into the first (this frame): one cell."),
    "split": ("Split cell", "K",
              "Cut the selected cell in two: along the line drawn with “Draw cut line”, "
              "or, without a line, where it narrows."),
    "swap": ("Swap / reassign from here", "W",
             "From this frame on, the first and second selected tracks exchange identities "
             "(or the first continues as the second when that one has ended)."),
    "link": ("Link tracks", "J",
             "Join the two selected tracks: the later one continues the earlier one."),
    "cut": ("Cut track here", "U",
            "From this frame on the selected track becomes a new track (no parent)."),
    "mark_division": ("Mark division", "Y",
                      "The selected track that ends earlier becomes the mother of the other."),
    "unmark_division": ("Unmark division", "Shift-Y",
                        "The selected track no longer has a mother."),
    "undo": ("Undo", "Control-Z", "Undo the last correction (any number of times)."),
    "redo": ("Redo", "Control-Shift-Z", "Redo the last undone correction."),
}


def key_text(key: str) -> str:
    return key.replace("Control", "Ctrl").replace("Delete", "Del").replace("-", "+")


def qcolor(rgba) -> QColor:
    r, g, b = (np.clip(np.asarray(rgba, float)[:3], 0, 1) * 255).astype(int).tolist()
    return QColor(r, g, b)


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def frame_centroids(frame: np.ndarray, t: int) -> np.ndarray:
    """``[id, t, y, x]`` rows of one frame's cells (mask centroids), by bincount."""
    frame = np.asarray(frame)
    flat = frame.ravel()
    if not flat.size or flat.max() == 0:
        return np.zeros((0, 4))
    H, W = frame.shape
    if (H, W) not in _GRIDS:
        _GRIDS.clear()
        _GRIDS[(H, W)] = (np.repeat(np.arange(H, dtype=float), W),
                          np.tile(np.arange(W, dtype=float), H))
    yy, xx = _GRIDS[(H, W)]
    if int(flat.max()) < 4 * flat.size + 65536:
        key, values = flat.astype(np.intp, copy=False), None
    else:  # huge ids: compact them first (sorting is slower than counting)
        values, key = np.unique(flat, return_inverse=True)
    area = np.bincount(key)
    sy = np.bincount(key, weights=yy, minlength=len(area))
    sx = np.bincount(key, weights=xx, minlength=len(area))
    idx = np.flatnonzero(area)
    ids = idx if values is None else values[idx]
    keep = ids != 0
    idx, ids = idx[keep], ids[keep]
    return np.column_stack([ids.astype(float), np.full(len(ids), float(t)),
                            sy[idx] / area[idx], sx[idx] / area[idx]])

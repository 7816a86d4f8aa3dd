"""Every use of napari's private API in this plugin, in one place.

Each function says why no public API does the job and what happens without it;
``tests/test_napari_private.py`` fails as soon as napari renames or removes one of these,
so an upgrade shows up as one failing test here instead of a broken widget. napari warns
(FutureWarning) about private access from plugin code; the warning is silenced here because
that test is what watches for the change.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["reset_undo_history", "warm_up_labels_rendering", "main_window",
           "paint_event_pixels", "press_key"]


def reset_undo_history(layer) -> None:
    """Empty a Labels layer's own paint history.

    The correction widget keeps its own undo (core.edit.TrackEditor, which also undoes
    lineage changes); napari's Ctrl+Z on the layer would undo pixels behind the editor's back.
    napari has no public call for it. Without it, napari's undo stays available and the
    editor repairs what it undoes on the next edit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reset = getattr(layer, "_reset_history", None)
        if reset is not None:
            reset()


def warm_up_labels_rendering() -> None:
    """Pay the first Labels layer's set-up (colormap, its numba code: about 1 s) early.

    Rendering a tiny slice through ``_raw_to_displayed`` is the only way to trigger it
    without a canvas. Without it, the first run's first frame shows about a second later.
    """
    from napari.layers import Labels

    probe = Labels(np.zeros((2, 8, 8), np.uint32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        render = getattr(probe, "_raw_to_displayed", None)
        if render is not None:
            render(np.arange(64, dtype=np.uint32).reshape(8, 8))


def main_window(viewer):
    """The viewer's Qt main window (to size it for a screenshot); napari exposes none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return viewer.window._qt_window


def paint_event_pixels(atom):
    """``(t, ys, xs, values)`` per frame for one atom of a Labels ``paint`` event's value.

    The event is public, but what its atoms hold is not documented: napari's own masked
    paint atom (bounding box, mask, one new value) or an ``(indices, old, new)`` triple.
    Without it a brush stroke cannot become one undoable TrackEditor edit.
    """
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:  # _MaskedPaintAtom: bounding box + mask + one new value
        shape = tuple(s.stop - s.start for s in slice_key)
        mask = atom.mask if atom.mask is not None else np.ones(shape, bool)
        idx = np.nonzero(mask)
        idx = [i + s.start for i, s in zip(idx, slice_key)]
        vals = np.full(len(idx[0]), int(atom.new_value), np.int64)
    else:  # (indices, old values, new values)
        indices, _, new = atom
        idx = [np.asarray(i).ravel() for i in indices]
        vals = np.broadcast_to(np.asarray(new, np.int64), idx[0].shape).ravel()
    if len(idx) < 3 or not len(idx[0]):
        return []
    t_all, ys, xs = idx[-3], idx[-2], idx[-1]
    out = []
    for t in np.unique(t_all):
        m = t_all == t
        out.append((int(t), ys[m].astype(np.intp), xs[m].astype(np.intp), vals[m]))
    return out


def press_key(viewer, key: str) -> None:
    """Press and release ``key`` as napari's canvas does when the keyboard sends it (the key
    bindings of the active layer and the viewer run). For tests and scripted demos: napari
    has no public call that goes through its key map."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)

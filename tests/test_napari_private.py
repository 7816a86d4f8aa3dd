"""The napari private API this plugin relies on (plugin/napari_private.py) is still there.

When one of these fails after a napari upgrade, the adapter function named in the message
needs a new way to do its job; nothing else in the plugin touches napari's private API.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from napari.layers import Labels

from napari_cosine_tracker.plugin import napari_private


def test_labels_layers_still_have_the_private_calls_we_use():
    layer = Labels(np.zeros((2, 8, 8), np.uint32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert callable(getattr(layer, "_reset_history", None)), "reset_undo_history"
        assert callable(getattr(layer, "_raw_to_displayed", None)), "warm_up_labels_rendering"
    # and they do what the adapter expects: a paint, then no undo left
    layer.paint((0, 4, 4), 3, refresh=False)
    napari_private.reset_undo_history(layer)
    layer.undo()
    assert layer.data[0, 4, 4] == 3
    napari_private.warm_up_labels_rendering()


@pytest.mark.gui
def test_the_viewer_still_has_a_private_main_window(make_napari_viewer):
    viewer = make_napari_viewer()
    window = napari_private.main_window(viewer)
    window.resize(640, 480)
    assert window.width() == 640


def test_paint_events_still_carry_atoms_we_can_read():
    """A brush stroke's ``paint`` event gives, per frame, the pixels and their new value
    (what the correction widget turns into one undoable edit)."""
    layer = Labels(np.zeros((3, 16, 16), np.uint32))
    seen = []
    layer.events.paint.connect(lambda ev: seen.extend(ev.value))
    layer.paint((1, 8, 8), 5, refresh=False)
    layer.fill((2, 0, 0), 7, refresh=False)
    got = [p for atom in seen for p in napari_private.paint_event_pixels(atom)]
    assert {t for t, *_ in got} == {1, 2}, "paint_event_pixels"
    for t, ys, xs, vals in got:
        expected = layer.data[t][ys, xs]
        np.testing.assert_array_equal(vals, expected)
        assert len(ys) and (vals == (5 if t == 1 else 7)).all()
    brush = next(p for p in got if p[0] == 1)
    assert (8 in brush[1]) and (8 in brush[2])
    fill = next(p for p in got if p[0] == 2)
    assert len(fill[1]) == 16 * 16


@pytest.mark.gui
def test_key_presses_still_reach_the_active_layers_bindings(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((2, 8, 8), np.uint32))
    seen = []
    layer.bind_key("K", lambda _layer: seen.append("K"), overwrite=True)
    napari_private.press_key(viewer, "K")
    assert seen == ["K"], "press_key"

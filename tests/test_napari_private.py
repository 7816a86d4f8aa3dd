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

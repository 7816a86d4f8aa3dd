"""*Track these labels*, docked and clicked as a user would (under xvfb-run)."""

import numpy as np
import pytest

from napari_cosine_tracker.core.link import LinkParams
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.plugin.layers import LINEAGE_KEY

pytestmark = pytest.mark.usefixtures("isolated_settings")


def _shuffled(labels, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros(labels.shape, np.int32)
    for t, lab in enumerate(labels):
        ids = np.unique(lab)[1:]
        lut = np.zeros(int(lab.max()) + 1, np.int32)
        lut[ids] = rng.permutation(ids.size) + 1
        out[t] = lut[lab]
    return out


def test_track_these_labels_adds_tracked_layers_on_the_input_scale(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    movie = make_synthetic_movie(n_frames=10, shape=(128, 128), n_cells=5, seed=5, division_rate=0.3)
    viewer.add_image(movie.images, name="movie", scale=(1, 0.5, 0.5))
    viewer.add_labels(_shuffled(movie.labels), name="cellpose", scale=(1, 0.5, 0.5), translate=(0, 3, 4))
    _, widget = viewer.window.add_plugin_dock_widget("napari-cosine-tracker", "Track these labels")
    assert widget.layer_choice.value.name == "cellpose"
    # the rows come from LinkParams' own metadata: same labels and defaults as the CLI
    assert widget.form["gap_frames"].label == "Gap frames"
    assert widget.form["gap_frames"].value == LinkParams().gap_frames
    assert widget.form.value() == LinkParams()
    widget.form["gap_frames"].value = 1
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: "cellpose tracked" in viewer.layers, timeout=30000)
    tracked = viewer.layers["cellpose tracked"]
    tracks = viewer.layers["cellpose tracks"]
    lineage = tracked.metadata[LINEAGE_KEY]
    # one id per true track in each frame: the shuffled ids were linked back into tracks
    for t in range(10):
        assert np.unique(tracked.data[t]).size == np.unique(movie.labels[t]).size
    assert len(lineage) >= len(movie.lineage) - 1
    assert tuple(tracked.scale) == (1, 0.5, 0.5) and tuple(tracked.translate) == (0, 3, 4)
    assert tuple(tracks.scale) == (1, 0.5, 0.5)
    assert "tracks" in widget.status.value
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5000)


def test_track_these_labels_explains_a_layer_that_is_not_a_movie(make_napari_viewer, qtbot, monkeypatch):
    import napari_cosine_tracker.plugin.link_widget as lw

    said = []
    monkeypatch.setattr(lw, "show_warning", said.append)
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((64, 64), np.int32), name="one image")
    _, widget = viewer.window.add_plugin_dock_widget("napari-cosine-tracker", "Track these labels")
    widget.run_button.clicked.emit()
    assert said and "(time, y, x)" in said[0]
    assert len(viewer.layers) == 1

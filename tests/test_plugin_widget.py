"""The docked tracker widget, driven as a user would, under a real display (xvfb-run).

Most tests use a tiny randomly initialised model written with ``save_model`` (seconds on two
CPU cores); its "cells" are blobs, which is enough to check the plumbing: streaming frames,
pause/resume/cancel, live re-labelling, re-tracking, export, errors. One test runs the shipped
model (skipped while ``models/default`` is absent) and renders ``docs/screenshot.png``.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cosine_tracker.core.io import read_ctc_result
from napari_cosine_tracker.core.model import default_model_dir
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

pytest.importorskip("napari_cosine_tracker.core.pipeline")

from napari_cosine_tracker.plugin.layers import LINEAGE_KEY  # noqa: E402
from napari_cosine_tracker.plugin.napari_private import main_window  # noqa: E402
from napari_cosine_tracker.plugin.widget import (  # noqa: E402
    MODEL_FOLDER,
    MODEL_SHIPPED,
    TrackerWidget,
)

PLUGIN = "napari-cosine-tracker"
WIDGET = "Segment and track cells"
REPO = Path(__file__).resolve().parents[1]
T, SHAPE = 8, (128, 128)


@pytest.fixture(scope="module")
def movie():
    return make_synthetic_movie(n_frames=T, shape=SHAPE, n_cells=5, seed=5, division_rate=0.3)


pytestmark = pytest.mark.usefixtures("isolated_settings")


@pytest.fixture(scope="module")
def tiny_model(make_tiny_model):
    """A small random model whose embeddings mark every pixel foreground (blob clusters)."""
    return make_tiny_model(seed=2, filters=4, levels=2, pixel_scale=None)


def _dock(viewer) -> TrackerWidget:
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert isinstance(widget, TrackerWidget)
    return widget


def _use_model(widget, model_dir):
    widget.device.value = "CPU"
    # the tiny random model's "cells" are blobs of any size: plumbing tests keep scale 1
    widget.auto_scale.value = model_dir is None
    if model_dir is None:
        widget.model_source.value = MODEL_SHIPPED
    else:
        widget.model_source.value = MODEL_FOLDER
        widget.model_folder.value = str(model_dir)
    widget.reset_params()  # "Defaults": the chosen model's recommendations


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=timeout)


def test_movie_choice_and_clear_messages(make_napari_viewer, movie, tmp_path):
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    assert not widget.run_button.isEnabled()
    assert "Choose an image layer" in widget.movie_info.text()

    viewer.add_image(movie.images[0], name="one frame")
    assert "single image" in widget.movie_info.text()
    assert not widget.run_button.isEnabled()
    viewer.add_image(np.zeros((3, 4, 32, 32), np.uint16), name="zstack")
    assert "4 dimensions" in widget.movie_info.text()
    img = viewer.add_image(movie.images, name="cells")
    assert widget.movie_layer is img
    assert viewer.dims.axis_labels[-3] == "time"  # not napari's "-3"
    # the model picker lists the packaged models by name, with what each is for
    from napari_cosine_tracker.core.zoo import list_models

    assert [m.name for m in list_models()] == list(widget.model_source.choices[1:-1])
    assert widget.model_source.value == "Automatic (by the movie)"
    # automatic: the fluorescence model for this dark-background movie, said in words
    assert "<b>fluorescence</b> for this movie" in widget.model_info.text()
    assert list_models()[0].description in widget.model_info.text()
    # a transmitted-light movie (bright background, darker cells) gets the label-free model
    viewer.add_image((movie.images.max() - movie.images) // 2 + movie.images.max() // 3,
                     name="dic-like")
    assert "<b>label-free</b> for this movie" in widget.model_info.text()
    viewer.layers.selection.active = img
    widget.movie_combo.value = img
    assert f"{T} frames of {SHAPE[0]} × {SHAPE[1]} pixels" in widget.movie_info.text()
    # Open…: a folder of frames becomes the selected movie; a single image is refused clearly
    from napari_cosine_tracker.core.io import write_movie_folder

    folder = write_movie_folder(tmp_path / "02", movie.images[:3])
    layer = widget.open_movie(folder)
    # (plugin widgets get napari's public proxy of the viewer, so compare by name)
    assert layer is not None and widget.movie_layer.name == layer.name == "02"
    assert layer.data.shape == (3,) + SHAPE
    import tifffile

    tifffile.imwrite(tmp_path / "one.tif", movie.images[0])
    assert widget.open_movie(tmp_path / "one.tif") is None
    assert "single 2-D image" in widget.movie_info.text()
    # a GPU that is not there: said up front, Run stays off
    if not torch.cuda.is_available():
        widget.device.value = "CUDA (NVIDIA GPU)"
        assert "No CUDA (NVIDIA GPU) on this computer" in widget.model_info.text()
        assert not widget.run_button.isEnabled()
        widget.device.value = "Automatic"
    # tooltips speak to biologists and every control has one
    for w in widget.param_widgets.values():
        assert len(w.tooltip) > 40
    # the rows and the command line's flags share one label, help and range per setting
    import contextlib
    import io

    from napari_cosine_tracker.core.cli import main
    from napari_cosine_tracker.core.cluster import ClusterParams
    from napari_cosine_tracker.core.paramspec import specs

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["track", "--help"])
    track_help = " ".join(out.getvalue().split())
    for s in specs(ClusterParams):
        row = widget.param_widgets[s.name]
        assert (row.label, row.min, row.max) == (s.label, s.minimum, s.maximum)
        assert f"{s.flag} " in track_help and f"{s.label}: {s.help[:30]}" in track_help
    for b in (widget.run_button, widget.pause_button, widget.cancel_button,
              widget.apply_button, widget.export_button):
        assert b.toolTip()


def test_run_relabel_apply_export(make_napari_viewer, qtbot, movie, tiny_model, tmp_path,
                                  errors):
    viewer = make_napari_viewer()
    # a movie in physical units, shifted: the output layers must land on it
    viewer.add_image(movie.images, name="cells", scale=(5.0, 0.5, 0.5), translate=(0, 10, 20))
    widget = _dock(viewer)
    _use_model(widget, tiny_model)
    assert widget.run_button.isEnabled(), widget.model_info.text()

    partial = []  # labels seen while later frames were still running

    widget.frame_done.connect(
        lambda t: partial.append((t, int(np.count_nonzero(widget.labels_layer.data)))))
    widget.run()
    _wait_idle(qtbot, widget)

    assert not errors, [n.message for n in errors]
    s = widget.session
    assert s.frames_done == T and s.n_frames == T
    assert f"{T} of {T} frames through the network" in widget.run_info.text()
    assert any(t < T - 1 and n > 0 for t, n in partial), "cells appear before the run ends"
    lab, tracks = widget.labels_layer, widget.tracks_layer
    assert lab.data.shape == movie.images.shape and lab.data.max() > 0
    for out in (lab, tracks):
        assert tuple(out.scale) == (5.0, 0.5, 0.5) and tuple(out.translate) == (0, 10, 20)
    lineage = lab.metadata[LINEAGE_KEY]
    assert set(np.unique(lab.data)) - {0} == set(lineage[:, 0].tolist())
    assert tracks is not None and set(np.unique(tracks.data[:, 0])) <= set(lineage[:, 0])
    tid = int(tracks.data[0, 0])
    np.testing.assert_allclose(tracks.track_colors[0], lab.get_color(tid), atol=1e-6)
    assert widget.apply_button.isEnabled() and widget.export_button.isEnabled()
    assert widget.progress_bar.value() == widget.progress_bar.maximum()

    # live tuning: the pair under the time slider is re-labelled, nothing else
    viewer.dims.set_current_step(0, 4)
    before = lab.data.copy()
    widget.param_widgets["min_cluster_size"].value = 5000
    # a preview, not a tracking: export waits for Apply to all frames
    qtbot.waitUntil(lambda: not widget.export_button.isEnabled() and not widget.is_busy(),
                    timeout=15_000)
    after = lab.data
    assert not np.array_equal(before[3:5], after[3:5])
    np.testing.assert_array_equal(before[:3], after[:3])
    np.testing.assert_array_equal(before[5:], after[5:])
    assert not widget.export_button.isEnabled()  # labels are a preview until applied
    assert "Apply to all frames" in widget.params_info.text()
    # back to the tracked settings: the tracking is shown again, no re-run needed
    widget.param_widgets["min_cluster_size"].value = lab.metadata["params"]["min_cluster_size"]
    qtbot.waitUntil(lambda: widget.export_button.isEnabled(), timeout=5_000)
    np.testing.assert_array_equal(lab.data, before)
    assert widget.export_button.isEnabled()
    # a small change: cells it leaves alone keep their track's id, so their colour still
    # matches the Tracks layer; cells it makes get ids no track has
    applied = lab.metadata["params"]["min_object_size"]
    widget.param_widgets["min_object_size"].value = applied + 1
    qtbot.waitUntil(lambda: not widget.export_button.isEnabled() and not widget.is_busy(),
                    timeout=15_000)
    both = (before[3:5] > 0) & (lab.data[3:5] > 0)
    assert both.sum() > 0.5 * (before[3:5] > 0).sum()
    assert (lab.data[3:5][both] == before[3:5][both]).mean() > 0.9
    new_ids = set(np.unique(lab.data[3:5]).tolist()) - set(np.unique(before).tolist())
    assert all(i > lineage[:, 0].max() for i in new_ids)
    widget.param_widgets["min_object_size"].value = applied
    qtbot.waitUntil(lambda: widget.export_button.isEnabled(), timeout=5_000)
    np.testing.assert_array_equal(lab.data, before)

    # apply to all frames: a new consistent tracking with the new settings
    widget.param_widgets["min_cluster_size"].value = 60
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=15_000)
    widget.daughter_ratio.value = 0.0  # a tracking setting: used by the next linking
    assert "Apply to all frames" in widget.params_info.text()
    widget.apply_to_all()
    _wait_idle(qtbot, widget)
    assert not errors, [n.message for n in errors]
    assert widget.export_button.isEnabled()
    assert lab.metadata["params"]["min_cluster_size"] == 60
    assert widget.session.track_params.min_daughter_ratio == 0.0

    out = tmp_path / "01_RES"
    widget.export(out)
    _wait_idle(qtbot, widget)
    labels2, lin2 = read_ctc_result(out)
    np.testing.assert_array_equal(np.asarray(labels2), lab.data)
    np.testing.assert_array_equal(lin2[:, 0], lab.metadata[LINEAGE_KEY][:, 0])
    assert "Saved" in widget.output_info.text()

    # embedding colours overlay: computed in the background for every frame, toggled off/on
    widget.show_pca.value = True
    _wait_idle(qtbot, widget)
    pca = widget.pca_layer
    assert pca.rgb and pca.data.shape == movie.images.shape + (3,)
    assert all(pca.data[t].max() > 0 for t in range(T))
    assert viewer.layers.index(pca) < viewer.layers.index(lab)  # below the cells
    widget.show_pca.value = False
    assert not pca.visible
    assert not errors, [n.message for n in errors]


def test_resize_for_cell_size_runs_the_network_again(make_napari_viewer, qtbot, movie, tiny_model,
                                                     errors):
    """"Resize frames by" reaches the network, the cells come back at the movie's size, a
    change asks for a new run, and the choice is remembered."""
    viewer = make_napari_viewer()
    viewer.add_image(movie.images, name="cells")
    widget = _dock(viewer)
    _use_model(widget, tiny_model)
    widget.scale.value = 0.5
    widget.run()
    _wait_idle(qtbot, widget)
    assert not errors, [n.message for n in errors]
    stream = widget.session.stream
    assert stream.scale == 0.5 and stream.model_shape == (SHAPE[0] // 2, SHAPE[1] // 2)
    assert widget.labels_layer.data.shape == movie.images.shape
    assert widget.labels_layer.data.max() > 0
    widget.scale.value = 1.0
    assert "Run starts from the first frame" in widget.run_info.text()  # the network runs afresh
    widget.scale.value = 2.0
    again = TrackerWidget(viewer)
    assert again.scale.value == 2.0
    again.close()
    again.deleteLater()


@pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").is_file(),
                    reason="the shipped model is not installed")
def test_measure_the_cells_sets_the_resize_factor(make_napari_viewer, qtbot, errors):
    """"Measure the cells" runs in the background, reports what it found and sets "Resize
    frames by": the same cells drawn twice as wide get half the factor."""
    from skimage.transform import rescale

    viewer = make_napari_viewer()
    cells = make_synthetic_movie(n_frames=4, shape=(160, 160), n_cells=6, seed=3).images
    viewer.add_image(cells, name="cells")
    widget = _dock(viewer)
    _use_model(widget, None)
    found = []
    for movie in (cells, np.stack([rescale(f.astype(np.float32), 2, preserve_range=True)
                                   for f in cells])):
        viewer.layers["cells"].data = movie
        widget.scale.value = 1.0
        with qtbot.waitSignal(widget.job_finished, timeout=120_000) as done:
            widget.estimate_scale()
        assert done.args == ["estimate", True], widget.run_info.text()
        assert not errors, [n.message for n in errors]
        # the result is shown when the job ends; a late progress step must not replace it
        assert "pixels across: resize by" in widget.scale_info.text()
        qtbot.wait(200)
        assert "pixels across: resize by" in widget.scale_info.text()
        found.append(widget.scale.value)
    assert found[0] > 1.0  # the synthetic cells are smaller than the training nuclei
    assert found[1] / found[0] == pytest.approx(0.5, rel=0.2)
    assert widget.run_button.isEnabled() and widget.estimate_button.isEnabled()

    # With "Measure the cells before a new run" on, Run on an unmeasured movie measures first
    viewer.layers["cells"].data = cells
    widget.scale.value = 1.0  # typed by the user: measuring automatically goes off ...
    assert not widget.auto_scale.value
    widget.auto_scale.value = True  # ... until switched on again
    jobs = []
    widget.job_finished.connect(lambda job, ok: jobs.append((job, ok)))
    widget.run()
    qtbot.waitUntil(lambda: ("run", True) in jobs, timeout=180_000)
    assert jobs[0] == ("estimate", True) and not errors
    assert widget.scale.value == pytest.approx(found[0], rel=0.05)
    assert widget.session.stream.scale == widget.scale.value and widget.auto_scale.value
    assert widget.labels_layer.data.max() > 0
    widget.run()  # measured already: runs again at once
    qtbot.waitUntil(lambda: jobs.count(("run", True)) == 2, timeout=180_000)
    assert [j for j, _ in jobs].count("estimate") == 1


def test_pause_resume_cancel_keep_state(make_napari_viewer, qtbot, tiny_model, errors):
    m = make_synthetic_movie(n_frames=14, shape=(64, 64), n_cells=3, seed=2)
    viewer = make_napari_viewer()
    viewer.add_image(m.images, name="cells")
    widget = _dock(viewer)
    _use_model(widget, tiny_model)

    def pause_on_first_frame(t):
        if widget.controller.phase == "running" and not widget.controller.stop.is_set():
            widget.pause()

    widget.frame_done.connect(pause_on_first_frame)
    widget.run()
    qtbot.waitUntil(lambda: widget.controller.phase == "paused" and not widget.is_busy(), timeout=30_000)
    s = widget.session
    k = s.frames_done
    assert 0 < k < 14
    assert widget.pause_button.text() == "Resume" and widget.pause_button.isEnabled()
    # one count, in one vocabulary, wherever it shows; Resume is the only way on
    said = f"{k} of 14 frames through the network"
    assert said in widget.run_info.text() and said in widget.progress_bar.format()
    assert widget.run_button.text() == "Run" and not widget.run_button.isEnabled()
    # the ConvGRU state lives in the session: Resume continues at frame k, it does not restart
    widget.frame_done.disconnect(pause_on_first_frame)
    widget.show_pca.value = True  # switched on while paused: every frame gets its colours
    resumed = []
    widget.frame_done.connect(resumed.append)
    widget.resume()
    assert widget.session is s
    _wait_idle(qtbot, widget)
    assert resumed[0] == k
    assert s.frames_done == 14 and widget.tracks_layer is not None
    qtbot.waitUntil(lambda: all(widget.pca_layer.data[t].any() for t in range(14)),
                    timeout=30_000)
    _wait_idle(qtbot, widget)
    viewer.layers.selection.active = widget.pca_layer
    widget.show_pca.value = False
    assert not widget.pca_layer.visible
    assert viewer.layers.selection.active.name == widget.labels_layer.name  # not the colours
    # same embeddings as a run that was never paused: the network's memory was kept
    from napari_cosine_tracker.core.pipeline import TrackingSession

    ref = TrackingSession(m.images, model_dir=tiny_model, device="cpu")
    for _ in ref.run_model():
        pass
    np.testing.assert_allclose(s.embeddings(13), ref.embeddings(13), atol=1e-3)

    # Run again, cancel early: state usable, Run continues from where it stopped
    def cancel_on_frame(t):
        if widget.controller.phase == "running" and not widget.controller.stop.is_set():
            widget.cancel()

    widget.frame_done.connect(cancel_on_frame)
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.controller.phase == "idle"
    k = widget.session.frames_done
    assert 0 < k < 14
    assert widget.run_button.isEnabled()
    assert widget.run_button.text() == f"Continue from frame {k}"  # 0-based, as the slider
    assert not widget.export_button.isEnabled()
    widget.frame_done.disconnect(cancel_on_frame)
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.session.frames_done == 14 and widget.export_button.isEnabled()

    # the movie layer deleted in the middle of a run: the run finishes, results still shown
    def delete_movie(t):
        if "cells" in viewer.layers:
            viewer.layers.remove("cells")

    widget.frame_done.connect(delete_movie)
    widget.run()  # "Run again"
    _wait_idle(qtbot, widget)
    assert "cells" not in viewer.layers
    assert widget.tracks_layer in viewer.layers and widget.labels_layer.data.max() > 0
    assert not widget.run_button.isEnabled()  # nothing to run on now
    assert not errors, [n.message for n in errors]
    assert not errors, [n.message for n in errors]


def test_worker_error_is_reported_and_widget_recovers(make_napari_viewer, qtbot, movie,
                                                      tmp_path, tiny_model, errors):
    bad = tmp_path / "bad_model"
    bad.mkdir()
    (bad / "weights.safetensors").write_bytes(b"not a safetensors file")
    (bad / "config.json").write_text((Path(tiny_model) / "config.json").read_text())
    viewer = make_napari_viewer()
    viewer.add_image(movie.images, name="cells")
    widget = _dock(viewer)
    _use_model(widget, bad)
    widget.run()
    _wait_idle(qtbot, widget)
    assert len(errors) == 1
    msg = str(errors[0].message)
    assert "Loading the model failed" in msg and "weights.safetensors" in msg
    assert widget.controller.phase == "idle" and widget.run_button.isEnabled()
    assert "Stopped" in widget.run_info.text()
    # the user picks a good model and carries on
    errors.clear()
    _use_model(widget, tiny_model)
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.session.frames_done == T and not errors


def test_settings_are_remembered(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    w1 = TrackerWidget(viewer)
    _use_model(w1, tiny_model)
    w1.param_widgets["min_samples"].value = 5
    w1.param_widgets["coord_scale"].value = 12.5
    w1.show_pca.value = True
    w1.daughter_ratio.value = 0.1
    w2 = TrackerWidget(viewer)
    assert w2.param_widgets["min_samples"].value == 5
    assert w2.param_widgets["coord_scale"].value == 12.5
    assert w2.daughter_ratio.value == pytest.approx(0.1)
    assert w2.model_source.value == MODEL_FOLDER
    assert Path(w2.model_folder.value) == Path(tiny_model)
    assert w2.device.value == "CPU" and w2.show_pca.value is True
    w2.reset_params()
    assert w2.params().min_samples != 5 or w2.params().coord_scale != 12.5
    assert w2.daughter_ratio.value == pytest.approx(0.25)
    for w in (w1, w2):
        w.close()
        w.deleteLater()


def test_settings_are_remembered_per_model(make_napari_viewer, tiny_model, tmp_path):
    """Settings tuned for one network do not carry over to another (e.g. an upgraded model),
    and come back when the user returns to it, in whatever folder it lies."""
    import shutil

    from napari_cosine_tracker.core.model import read_model_config
    from napari_cosine_tracker.core.pipeline import default_params

    def switch(widget, model_dir):  # as the user does it: no "Defaults" press
        if model_dir is None:
            widget.model_source.value = MODEL_SHIPPED
        else:
            widget.model_source.value = MODEL_FOLDER
            widget.model_folder.value = str(model_dir)

    viewer = make_napari_viewer()
    w = TrackerWidget(viewer)
    _use_model(w, tiny_model)
    w.param_widgets["min_samples"].value = 3
    w.param_widgets["coord_scale"].value = 7.5
    switch(w, None)  # the shipped model: its own recommendations
    shipped = default_params(read_model_config(default_model_dir()))[0]
    assert w.params().min_samples == shipped.min_samples
    assert w.params().coord_scale == shipped.coord_scale
    w.param_widgets["min_samples"].value = shipped.min_samples + 1
    copy = tmp_path / "same_model_elsewhere"
    shutil.copytree(tiny_model, copy)
    switch(w, copy)
    assert (w.params().min_samples, w.params().coord_scale) == (3, 7.5)
    switch(w, None)
    assert w.params().min_samples == shipped.min_samples + 1
    w.close()
    w.deleteLater()


@pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").is_file(),
                    reason="shipped model models/default not trained yet")
def test_shipped_model_and_screenshot(make_napari_viewer, qtbot, errors, tmp_path):
    """The shipped model finds the cells; renders the screenshot (widget docked).

    With ``NCT_SCREENSHOT=1`` the pictures go to ``docs/`` (to refresh the README's), else to
    a temporary folder, so a test run never changes tracked files.
    """
    shots = REPO / "docs" if os.environ.get("NCT_SCREENSHOT") else tmp_path
    m = make_synthetic_movie(n_frames=6, shape=(192, 192), n_cells=6, seed=0)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(m.images, name="nuclei")
    widget = _dock(viewer)
    _use_model(widget, None)
    widget.run()
    _wait_idle(qtbot, widget, timeout=240_000)
    assert not errors, [n.message for n in errors]
    found = [len(np.unique(f)) - 1 for f in widget.labels_layer.data]
    true = [len(np.unique(f)) - 1 for f in m.labels]
    # a trained model finds about the right number of cells in every frame
    assert np.median(np.abs(np.subtract(found, true))) <= 2, (found, true)
    _screenshot(viewer, qtbot, shots / "screenshot.png")
    # the embedding overlay, as a second picture for the docs
    widget.show_pca.value = True
    _wait_idle(qtbot, widget)
    widget.labels_layer.visible = False
    _screenshot(viewer, qtbot, shots / "screenshot-embedding.png")
    assert not errors, [n.message for n in errors]


def _screenshot(viewer, qtbot, path):
    import imageio.v3 as iio

    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
    main_window(viewer).resize(1500, 950)
    viewer.reset_view()
    qtbot.wait(300)
    img = viewer.screenshot(canvas_only=False, flash=False)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, img)
    assert canvas[..., :3].std() > 10, f"canvas is blank (std {canvas[..., :3].std():.1f})"
    return img


def test_demo_runs_napari_and_writes_result(tmp_path, tiny_model, qapp, monkeypatch):
    """`make demo` path: napari opens, the widget runs, result + screenshot are written."""
    from napari_cosine_tracker import demo

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--frames", "6", "--size", "96", "--model",
                    str(tiny_model), "--device", "cpu", "--exit"])
    assert rc == 0
    labels, lineage = read_ctc_result(out / "01_RES")
    assert len(labels) == 6 and len(lineage)
    import imageio.v3 as iio

    shot = iio.imread(out / "screenshot.png")
    assert shot.shape[0] > 400 and shot[..., :3].std() > 10


def test_fine_tune_on_the_cells_and_cancel(make_napari_viewer, qtbot, movie, tiny_model, tmp_path, errors):
    """"Fine-tune on these cells": trains the current model on the movie and its cells layer in
    the background, saves a model folder and switches to it; Cancel keeps the model so far."""
    import json

    viewer = make_napari_viewer()
    viewer.add_image(movie.images, name="cells")
    widget = _dock(viewer)
    _use_model(widget, tiny_model)
    assert not widget.finetune_button.isEnabled()  # nothing tracked yet
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.finetune_button.isEnabled()
    widget.param_widgets["min_cluster_size"].value = 55
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=15_000)
    widget.apply_to_all()
    _wait_idle(qtbot, widget)

    out = tmp_path / "tuned"
    widget.fine_tune(out, steps=3)
    assert widget.is_busy() and not widget.finetune_button.isEnabled()
    _wait_idle(qtbot, widget)
    assert not errors, [n.message for n in errors]
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["steps"] == 3
    assert config["training"]["config"]["init"] == str(tiny_model)
    assert config["training"]["data"][0]["name"] == widget.labels_layer.name
    assert widget.model_source.value == MODEL_FOLDER and Path(widget.model_folder.value) == out
    assert widget.param_widgets["min_cluster_size"].value == 55  # settings carry over
    assert "Trained 3 steps" in widget.finetune_info.text()
    assert widget.progress_bar.format() == "Model fine-tuned"
    assert "Run starts from the first frame" in widget.run_info.text()  # with the new model

    widget.run()
    _wait_idle(qtbot, widget)
    out2 = tmp_path / "tuned_again"
    widget.fine_tune(out2, steps=10_000)
    qtbot.waitUntil(lambda: widget.progress_bar.value() >= 2, timeout=60_000)
    assert widget.cancel_button.isEnabled()
    widget.cancel()
    _wait_idle(qtbot, widget)
    assert not errors, [n.message for n in errors]
    steps = json.loads((out2 / "config.json").read_text())["training"]["steps"]
    assert 2 <= steps < 10_000
    assert Path(widget.model_folder.value) == out2
    assert widget.run_button.isEnabled()

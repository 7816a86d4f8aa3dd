"""The tracker widget under faults: bad frames mid-run, cancel then continue, closing the
viewer mid-run, and the event loop's responsiveness while the model and clustering run.

Runs under a real display (``xvfb-run -a``). Uses the widget's public behaviour only: its
buttons' methods (run, pause, resume, cancel), ``frame_done``/``job_finished`` signals,
``is_busy()`` and the layers it makes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_cosine_tracker.core.model import default_model_dir
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

pytest.importorskip("napari_cosine_tracker.core.pipeline")

from napari_cosine_tracker.plugin.layers import LINEAGE_KEY  # noqa: E402
from napari_cosine_tracker.plugin.widget import MODEL_FOLDER, TrackerWidget, warm_done  # noqa: E402

PLUGIN = "napari-cosine-tracker"
WIDGET = "Segment and track cells"


pytestmark = pytest.mark.usefixtures("isolated_settings")


@pytest.fixture(scope="module")
def tiny_model(make_tiny_model):
    return make_tiny_model()


def _dock(viewer, model_dir) -> TrackerWidget:
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.device.value = "CPU"
    widget.auto_scale.value = False  # the tiny random model's blobs have no cell size
    widget.model_source.value = MODEL_FOLDER
    widget.model_folder.value = str(model_dir)
    widget.reset_params()  # "Defaults": the chosen model's recommendations
    return widget


def _wait_idle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=timeout)


def _result(widget):
    lab = widget.labels_layer
    return np.asarray(lab.data).copy(), np.asarray(lab.metadata[LINEAGE_KEY]).copy()


def test_bad_frame_mid_run_is_reported_and_the_widget_recovers(make_napari_viewer, qtbot,
                                                               tiny_model, errors):
    m = make_synthetic_movie(n_frames=6, shape=(64, 64), n_cells=3, seed=4)
    images = m.images.astype(np.float32)
    images[3, 10, 10] = np.nan
    viewer = make_napari_viewer()
    layer = viewer.add_image(images, name="cells")
    widget = _dock(viewer, tiny_model)
    assert widget.run_button.isEnabled()  # NaN is only found when the frame is read
    finished = []
    widget.job_finished.connect(lambda job, ok: finished.append((job, ok)))
    widget.run()
    _wait_idle(qtbot, widget)
    assert finished == [("run", False)]
    assert len(errors) == 1
    msg = str(errors[0].message)
    assert "NaN" in msg and "frame" in msg and "nan_to_num" in msg, msg
    # the layer's name, and frame 3 counted from 0 (napari's slider) in the whole message
    assert "cells: frame 3" in msg and "on frame 3 " in msg and "array" not in msg, msg
    assert widget.run_button.isEnabled() and not widget.is_busy()
    assert "Stopped" in widget.run_info.text()
    # The user cleans the movie and runs again: a complete, error-free result.
    errors.clear()
    layer.data = np.nan_to_num(images)
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.session.frames_done == 6 and widget.export_button.isEnabled()
    assert not errors, [str(n.message) for n in errors]


def test_cancel_then_continue_gives_the_clean_result(make_napari_viewer, qtbot, tiny_model,
                                                     errors):
    m = make_synthetic_movie(n_frames=8, shape=(64, 64), n_cells=4, seed=6)
    viewer = make_napari_viewer()
    viewer.add_image(m.images, name="cells")
    widget = _dock(viewer, tiny_model)
    widget.run()
    _wait_idle(qtbot, widget)
    clean = _result(widget)

    # The same movie as a new layer: a new session, cancelled after its third frame.
    viewer.add_image(m.images.copy(), name="again")
    widget.movie_combo.value = viewer.layers["again"]

    def cancel_at_3(t):
        if t == 2:
            widget.cancel()

    widget.frame_done.connect(cancel_at_3)
    widget.run()
    _wait_idle(qtbot, widget)
    widget.frame_done.disconnect(cancel_at_3)
    k = widget.session.frames_done
    assert 0 < k < 8 and not widget.export_button.isEnabled()
    widget.run()  # "Continue from frame k"
    _wait_idle(qtbot, widget)
    assert widget.session.frames_done == 8
    again = _result(widget)
    np.testing.assert_array_equal(again[0], clean[0])
    np.testing.assert_array_equal(again[1], clean[1])
    assert not errors, [str(n.message) for n in errors]


def test_closing_the_viewer_mid_run_stops_the_worker(make_napari_viewer, qtbot, tiny_model,
                                                     errors):
    from qtpy.QtCore import QThreadPool

    m = make_synthetic_movie(n_frames=30, shape=(96, 96), n_cells=4, seed=7)
    viewer = make_napari_viewer()
    viewer.add_image(m.images, name="cells")
    widget = _dock(viewer, tiny_model)
    session = []
    widget.frame_done.connect(lambda t: session.append(widget.session))
    widget.run()
    qtbot.waitUntil(lambda: len(session) >= 2, timeout=120_000)
    viewer.close()
    # The background thread ends after its current frame; nothing keeps running the model.
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0,
                    timeout=30_000)
    done = session[-1].frames_done
    qtbot.wait(500)
    assert session[-1].frames_done == done < 30
    assert not widget.is_busy()  # napari sends dock widgets no closeEvent; the widget noticed
    assert not errors, [str(n.message) for n in errors]


def _tick_gaps(qtbot, until, timeout_ms):
    """Gaps (ms) between 5 ms timer ticks of the event loop until ``until()`` holds."""
    from qtpy.QtCore import QTimer

    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.waitUntil(until, timeout=timeout_ms)
    timer.stop()
    return np.diff(ticks) * 1000


def _assert_responsive(busy, idle):
    """No stall beyond 100 ms over the idle loop's p99, and p99 within 50 ms of it.

    One outlier (up to 300 ms) is allowed: on a shared virtual machine the GUI thread is
    descheduled now and then (a single 111 ms gap in one full-suite run where this loop
    otherwise shows 10-25 ms). Work that holds the GIL stalls on every frame pair instead
    (p99 83 ms, longest 127 ms when the HDBSCAN tree was built in the worker thread), which
    the count and the p99 catch.
    """
    idle_p99 = float(np.percentile(idle, 99))
    limit = 100 + idle_p99
    stalls = np.sort(busy[busy > limit])
    p99 = float(np.percentile(busy, 99))
    assert stalls.size <= 1 and (not stalls.size or stalls[-1] <= 300), (
        f"stalls over {limit:.0f} ms: {np.round(stalls).tolist()} (p99 {p99:.0f} ms)")
    assert p99 <= 50 + idle_p99, f"p99 gap {p99:.0f} ms (idle p99 {idle_p99:.0f} ms)"


def test_event_loop_stays_responsive_during_a_run(make_napari_viewer, qtbot, tiny_model,
                                                  errors):
    """Event-loop stalls while the sample movie runs through the model and clustering.

    Target: no gap while the model, the clustering and the tracking run exceeds by more than
    100 ms what the same loop shows idle on this machine, but for one outlier that other
    jobs sharing the CPU may cause (see ``_assert_responsive``). napari's own cost of adding
    a layer (the labels layer when Run is pressed, the Tracks layer with the result: vispy visuals, shader
    compiles, Qt controls; 0.1-0.5 s each under Xvfb's software GL) is measured and printed
    apart.
    """
    from napari_cosine_tracker.plugin.sample import synthetic_movie

    viewer = make_napari_viewer()
    data, meta, _ = synthetic_movie(n_frames=10)[0]
    viewer.add_image(data, **meta)
    widget = _dock(viewer, tiny_model)
    # The widget warms up imports and compiled code in the background when it opens.
    qtbot.waitUntil(warm_done.is_set, timeout=120_000)
    t_end = time.perf_counter() + 2.0
    idle = _tick_gaps(qtbot, lambda: time.perf_counter() > t_end, 5_000)
    t0 = time.perf_counter()
    widget.run()
    press_ms = (time.perf_counter() - t0) * 1000
    session = []
    widget.frame_done.connect(lambda t: session.append(widget.session))
    busy = _tick_gaps(qtbot, lambda: bool(session) and session[-1].result is not None, 300_000)
    shown = _tick_gaps(qtbot, lambda: not widget.is_busy(), 60_000)
    assert widget.session.frames_done == 10 and widget.tracks_layer is not None and not errors
    p99, worst = float(np.percentile(busy, 99)), float(busy.max())
    idle_p99, idle_worst = float(np.percentile(idle, 99)), float(idle.max())
    print(f"event loop while the model and clustering run: {len(busy)} ticks, p99 {p99:.0f} ms, "
          f"longest {worst:.0f} ms (idle p99 {idle_p99:.0f} ms, longest {idle_worst:.0f} ms); "
          f"Run press {press_ms:.0f} ms; showing the result: longest "
          f"{shown.max() if shown.size else 0:.0f} ms")
    _assert_responsive(busy, idle)


@pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").is_file(),
                    reason="the shipped model is not installed")
def test_event_loop_stays_responsive_while_measuring_the_cells(make_napari_viewer, qtbot,
                                                                errors):
    """"Measure the cells" runs the network and HDBSCAN (in the tree process) off the event
    loop: the same target as for a run."""
    from napari_cosine_tracker.plugin.sample import synthetic_movie

    viewer = make_napari_viewer()
    data, meta, _ = synthetic_movie(n_frames=6)[0]
    viewer.add_image(data, **meta)
    widget = _dock(viewer, default_model_dir())
    qtbot.waitUntil(warm_done.is_set, timeout=120_000)
    t_end = time.perf_counter() + 2.0
    idle = _tick_gaps(qtbot, lambda: time.perf_counter() > t_end, 5_000)
    assert widget.estimate_scale() is not None
    busy = _tick_gaps(qtbot, lambda: not widget.is_busy(), 180_000)
    assert "resize by" in widget.scale_info.text() and widget.scale.value > 1 and not errors
    worst, idle_p99 = float(busy.max()), float(np.percentile(idle, 99))
    print(f"event loop while measuring: {len(busy)} ticks, longest {worst:.0f} ms "
          f"(idle p99 {idle_p99:.0f} ms)")
    _assert_responsive(busy, idle)


def test_tracker_never_overwrites_a_layer_being_corrected(make_napari_viewer, qtbot, tiny_model,
                                                        errors, tmp_path):
    """Corrections are the user's work: once the correction widget edits the tracker's output,
    live re-labelling, "Apply to all" and a new run write into new layers instead."""
    import tifffile

    from napari_cosine_tracker.plugin.correction import CorrectionWidget
    from napari_cosine_tracker.plugin.layers import CORRECTING_KEY, PREVIEW_KEY

    m = make_synthetic_movie(n_frames=6, shape=(64, 64), n_cells=3, seed=2)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, m.images)
    viewer = make_napari_viewer()
    viewer.add_image(m.images, name="cells", metadata={"source_path": str(path)})
    widget = _dock(viewer, tiny_model)
    widget.run()
    _wait_idle(qtbot, widget)
    out = widget.labels_layer
    assert out.metadata["source_path"] == str(path)
    assert widget.tracks_layer.metadata["source_path"] == str(path)

    # a live preview of other settings is on screen when the correction starts: the tracking
    # comes back in those frames, and it is the tracking that gets corrected
    tracked = np.array(out.data)
    viewer.dims.set_current_step(0, 3)
    widget.param_widgets["min_cluster_size"].value += 40
    qtbot.waitUntil(lambda: PREVIEW_KEY in out.metadata and not widget.is_busy(), timeout=15_000)

    corr = CorrectionWidget(viewer, ask_restore=lambda *_: False)
    viewer.window.add_dock_widget(corr, name="Track correction", area="right")
    corr.bind(out)
    assert out.metadata[CORRECTING_KEY] is True and PREVIEW_KEY not in out.metadata
    np.testing.assert_array_equal(np.asarray(out.data), tracked)
    assert set(corr.editor.lineage[:, 0].tolist()) == set(np.unique(tracked).tolist()) - {0}
    # the project goes beside the movie, found through the output layer's metadata
    assert corr.project_path is not None and corr.project_path.parent == tmp_path
    tid = int(corr.editor.lineage[0, 0])
    corr.select(tid)
    assert corr.perform("delete_track")
    corrected = np.array(out.data)
    assert not (corrected == tid).any()

    widget.param_widgets["min_cluster_size"].value += 40
    widget.relabel_current()
    qtbot.wait(300)
    _wait_idle(qtbot, widget)
    np.testing.assert_array_equal(out.data, corrected)
    widget.apply_to_all()
    _wait_idle(qtbot, widget)
    assert widget.labels_layer is not out and widget.labels_layer in viewer.layers
    np.testing.assert_array_equal(out.data, corrected)
    assert corr.editor is not None and corr.layer is out
    assert not errors, [str(n.message) for n in errors]
    corr.unbind()
    assert CORRECTING_KEY not in out.metadata

"""The docked "Track correction" widget, driven as a user would, under a real display (xvfb-run).

A small synthetic movie with its true tracks stands in for a tracking result (no model
needed): the labels layer is set up as the tracker widget leaves it (``"<movie> cells"``,
lineage in its metadata, a ``"<movie> tracks"`` layer, the movie's path on the image layer),
so autosave finds the project folder beside the movie. Each action goes through its button
or keyboard shortcut; undo must restore the layers exactly.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import Qt

from napari_cosine_tracker.core.edit import check_consistency, default_project_path
from napari_cosine_tracker.core.io import write_ctc_result
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.plugin.correction import (
    SELECTION_LAYER,
    SHORTCUTS,
    CorrectionWidget,
)
from napari_cosine_tracker.plugin.layers import LINEAGE_KEY, OUTPUT_KEY, tracks_from_labels
from napari_cosine_tracker.plugin.napari_private import main_window, press_key

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "napari-cosine-tracker"
T, SHAPE = 8, (96, 96)


@pytest.fixture(scope="module")
def movie():
    return make_synthetic_movie(n_frames=T, shape=SHAPE, n_cells=5, seed=3, division_rate=0.3)


def _setup(viewer, movie, tmp_path, **kw):
    """Layers as the tracker widget makes them, and the correction widget docked."""
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie.images)
    viewer.add_image(movie.images, name="movie", metadata={"source_path": str(path)})
    lineage = movie.lineage.copy()
    lab = viewer.add_labels(movie.labels.astype(np.uint32), name="movie cells", opacity=0.55,
                            metadata={OUTPUT_KEY: "labels", LINEAGE_KEY: lineage})
    viewer.add_tracks(tracks_from_labels(movie.labels), name="movie tracks",
                      metadata={LINEAGE_KEY: lineage, OUTPUT_KEY: "tracks"})
    kw.setdefault("ask_restore", lambda *_: pytest.fail("unexpected restore question"))
    widget = CorrectionWidget(viewer, **kw)
    viewer.window.add_dock_widget(widget, name="Track correction", area="right")
    widget.bind(lab)
    return widget, lab


def _state(widget):
    lab = widget.layer
    tracks = widget.tracks_layer
    return (np.array(lab.data), np.array(lab.metadata[LINEAGE_KEY]),
            None if tracks is None else np.array(tracks.data))


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    if a[2] is not None and b[2] is not None:
        np.testing.assert_allclose(a[2], b[2])


def _consistent(widget):
    lab = widget.layer
    np.testing.assert_array_equal(lab.data, widget.editor.labels)
    assert check_consistency(np.asarray(lab.data), lab.metadata[LINEAGE_KEY]) == []
    # the Tracks layer shows the corrected cells
    np.testing.assert_allclose(widget.tracks_layer.data, tracks_from_labels(lab.data))


def _mouse(layer, points, modifiers=()):
    """A press, moves and a release at ``points`` (world coordinates), through napari's own
    mouse-callback dispatch, as the canvas sends them."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    def event(kind, pos, dragging):
        return ReadOnlyWrapper(SimpleNamespace(
            type=kind, position=tuple(pos), modifiers=tuple(modifiers), button=1,
            handled=False, is_dragging=dragging, dims_displayed=[1, 2],
            view_direction=None, pos=np.array([0, 0]), delta=np.array([0, 0])))

    mouse_press_callbacks(layer, event("mouse_press", points[0], False))
    for p in points[1:]:
        mouse_move_callbacks(layer, event("mouse_move", p, True))
    mouse_release_callbacks(layer, event("mouse_release", points[-1], False))


def _click(widget, viewer, t, track_id, shift=False):
    """A mouse click (camera mode) on the centroid of a cell."""
    widget.goto(t)
    y, x = widget.editor.centroids(t)[track_id]
    lab = widget.layer
    lab.mode = "pan_zoom"
    _mouse(lab, [lab.data_to_world([t, y, x])], ("Shift",) if shift else ())
    assert (widget.secondary if shift else widget.primary) == track_id


def _press(viewer, qtbot, key: str):
    """A key press on the canvas, as napari receives it from the keyboard."""
    press_key(viewer, key)
    qtbot.wait(10)


def _button(widget, qtbot, name):
    b = widget.buttons[name]
    assert b.isEnabled(), f"{name} button disabled"
    qtbot.mouseClick(b, Qt.MouseButton.LeftButton)


def _pick(ed, pred):
    for r in ed.lineage:
        if pred(*r.tolist()):
            return int(r[0])
    pytest.skip("synthetic movie has no suitable track")


def _neighbour(ed, t, a):
    """Another cell in frame t, the closest to a."""
    c = ed.centroids(t)
    ya, xa = c[a]
    others = sorted((np.hypot(y - ya, x - xa), i) for i, (y, x) in c.items() if i != a)
    return others[0][1]


def test_layers_shortcuts_and_widget_listing(make_napari_viewer, movie, tmp_path):
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    assert widget.editor is not None and widget.layer is lab
    assert widget.tracks_layer is viewer.layers["movie tracks"]
    assert SELECTION_LAYER in [l.name for l in viewer.layers]
    # the layer got its own copy of the labels, separate from the editor's
    assert not np.shares_memory(lab.data, widget.editor.labels)
    # every action's shortcut is shown on its button
    for name, (_, key, _) in SHORTCUTS.items():
        shown = key.replace("Control", "Ctrl").replace("Delete", "Del").replace("-", "+")
        assert shown in widget.buttons[name].text()
    assert widget.layer_combo.currentText() == "movie cells"
    # the lineage view lists every track
    assert set(widget.lineage_view.rows) == set(movie.lineage[:, 0].tolist())


def test_plugin_menu_binds_a_ctc_result_folder(make_napari_viewer, movie, tmp_path, qtbot):
    """Opened from the Plugins menu, the widget binds a result folder read by the plugin's
    reader; the project is kept beside that folder."""
    res = tmp_path / "01_RES"
    write_ctc_result(res, movie.labels, movie.lineage)
    viewer = make_napari_viewer()
    viewer.open(str(res), plugin=PLUGIN)
    lab = viewer.layers["01_RES tracked"]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Track correction")
    assert isinstance(widget, CorrectionWidget)
    qtbot.waitUntil(lambda: widget.editor is not None, timeout=5000)
    assert widget.layer is lab and widget.tracks_layer is viewer.layers["01_RES tracks"]
    assert widget.project_path == default_project_path(res)
    qtbot.waitUntil(lambda: (widget.project_path / "state.npz").is_file(), timeout=10_000)
    a = _pick(widget.editor, lambda i, f, l, p: l > f)
    _click(widget, viewer, widget.editor.track(a)[1], a)
    _press(viewer, qtbot, "Delete")
    assert not (lab.data == a).all() and widget.editor.can_undo
    _consistent(widget)
    widget.flush_autosave()
    qtbot.waitUntil(lambda: "(1 correction)" in widget.save_info.text(), timeout=5000)
    widget.unbind()


def test_tracker_rerun_rebinds(make_napari_viewer, movie, tmp_path, qtbot):
    """A new tracking run replaces the labels: the widget lets go while it runs and binds the
    new result when it is there."""
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path, ask_restore=lambda *_: False)
    # as the tracker widget does at the start of a run ...
    lab.data = np.zeros_like(lab.data)
    lab.metadata.pop(LINEAGE_KEY)
    qtbot.waitUntil(lambda: widget.editor is None, timeout=5000)
    # ... and at its end
    lab.data = movie.labels.astype(np.uint32)
    lab.metadata[LINEAGE_KEY] = movie.lineage.copy()
    qtbot.waitUntil(lambda: widget.editor is not None, timeout=5000)
    np.testing.assert_array_equal(widget.editor.labels, movie.labels)


def test_click_selects_and_outlines(make_napari_viewer, movie, tmp_path):
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    ed = widget.editor
    a = _pick(ed, lambda i, f, l, p: l - f >= 3)
    t = ed.track(a)[0] + 1
    _click(widget, viewer, t, a)
    b = _neighbour(ed, t, a)
    _click(widget, viewer, t, b, shift=True)
    sel = viewer.layers[SELECTION_LAYER].data
    np.testing.assert_array_equal(sel == 1, ed.labels[t] == a)
    np.testing.assert_array_equal(sel == 2, ed.labels[t] == b)
    assert lab.selected_label == a  # the brush paints the selected track
    assert f"track {a}" in widget.selection_info.text()
    # moving in time outlines the same track in the new frame
    widget.goto(t + 1)
    np.testing.assert_array_equal(viewer.layers[SELECTION_LAYER].data == 1,
                                  ed.labels[t + 1] == a)


def test_each_action_and_undo(make_napari_viewer, movie, tmp_path, qtbot):
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    ed = widget.editor
    start = _state(widget)
    a = _pick(ed, lambda i, f, l, p: l - f >= 4)
    fa, la, _ = ed.track(a)
    t = fa + 2

    def undo_all(n, how):
        for _ in range(n):
            if how == "key":
                _press(viewer, qtbot, "Control-Z")
            else:
                _button(widget, qtbot, "undo")
        _assert_same(_state(widget), start)
        assert not ed.can_undo

    # delete cell (button), undo (shortcut)
    _click(widget, viewer, t, a)
    _button(widget, qtbot, "delete_cell")
    assert not (lab.data[t] == a).any() and (lab.data[fa] == a).any()
    _consistent(widget)
    undo_all(1, "key")
    # redo through its shortcut, then undo again
    _press(viewer, qtbot, "Control-Shift-Z")
    assert not (lab.data[t] == a).any()
    undo_all(1, "button")

    # delete track (shortcut)
    _click(widget, viewer, t, a)
    _press(viewer, qtbot, "Shift-Delete")
    assert not np.isin(lab.data, [a]).any() and a not in lab.metadata[LINEAGE_KEY][:, 0]
    _consistent(widget)
    undo_all(1, "key")

    # merge two touching/near cells (shortcut G)
    b = _neighbour(ed, t, a)
    _click(widget, viewer, t, a)
    _click(widget, viewer, t, b, shift=True)
    area = int((lab.data[t] == a).sum() + (lab.data[t] == b).sum())
    _press(viewer, qtbot, "G")
    assert not (lab.data[t] == b).any() and (lab.data[t] == a).sum() >= area
    _consistent(widget)
    undo_all(1, "key")

    # split by watershed (button), the new part is selected as the second track
    _click(widget, viewer, t, a)
    _button(widget, qtbot, "split")
    new = widget.secondary
    assert new is not None and (lab.data[t] == new).any() and (lab.data[t] == a).any()
    _consistent(widget)
    undo_all(1, "button")

    # split along a drawn line (Shapes layer)
    _click(widget, viewer, t, a)
    widget.start_cut_line()
    y, x = ed.centroids(t)[a]
    lines = viewer.layers["cut line"]
    lines.add_paths([np.array([[y - 40, x], [y + 40, x]])])
    _button(widget, qtbot, "split")
    new = widget.secondary
    cols_a = np.nonzero(lab.data[t] == a)[1]
    cols_n = np.nonzero(lab.data[t] == new)[1]
    # the two parts lie on either side of the vertical cut
    assert max(cols_a.max(), cols_n.max()) > x > min(cols_a.min(), cols_n.min())
    assert (cols_a.mean() - x) * (cols_n.mean() - x) < 0
    assert len(lines.data) == 0 and viewer.layers.selection.active is lab
    _consistent(widget)
    undo_all(1, "key")

    # cut the track here (shortcut U): the tail becomes a new track
    _click(widget, viewer, t, a)
    _press(viewer, qtbot, "U")
    tail = widget.primary
    assert tail != a and ed.track(a)[1] == t - 1 and ed.track(tail)[:2] == (t, la)
    _consistent(widget)
    # ... and link it back (shortcut J): one track again
    _click(widget, viewer, t - 1, a)
    _click(widget, viewer, t, tail, shift=True)
    _press(viewer, qtbot, "J")
    assert ed.track(a)[:2] == (fa, la) and not (lab.data == tail).any()
    _consistent(widget)
    undo_all(2, "key")

    # swap identities from here (shortcut W)
    b = _neighbour(ed, t, a)
    _click(widget, viewer, t, a)
    _click(widget, viewer, t, b, shift=True)
    before = np.array(lab.data)
    _press(viewer, qtbot, "W")
    np.testing.assert_array_equal(lab.data[t] == b, before[t] == a)
    np.testing.assert_array_equal(lab.data[t - 1] == a, before[t - 1] == a)
    _consistent(widget)
    undo_all(1, "button")

    # mark a division (button) and unmark it (shortcut Shift-Y)
    _click(widget, viewer, t, a)
    _press(viewer, qtbot, "U")
    tail = widget.primary
    _click(widget, viewer, t - 1, a)
    _click(widget, viewer, t, tail, shift=True)
    _button(widget, qtbot, "mark_division")
    assert ed.track(tail)[2] == a
    assert widget.tracks_layer.graph.get(tail) == [a]
    _consistent(widget)
    _click(widget, viewer, t, tail)
    _press(viewer, qtbot, "Shift-Y")
    assert ed.track(tail)[2] == 0
    undo_all(3, "key")


def test_paint_stroke_is_one_undoable_edit(make_napari_viewer, movie, tmp_path, qtbot):
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    ed = widget.editor
    start = _state(widget)
    a = _pick(ed, lambda i, f, l, p: l - f >= 3)
    t = ed.track(a)[0] + 1
    _click(widget, viewer, t, a)
    widget.goto(t)
    y, x = (int(v) for v in ed.centroids(t)[a])
    # a brush stroke with napari's own paint tool: press, drag, release
    lab.mode = "paint"
    lab.brush_size = 5
    assert lab.selected_label == a
    _mouse(lab, [lab.data_to_world([t, y, x + 20 + dx]) for dx in (0, 4, 8, 12)])
    assert len(ed.history) == 1 and ed.history[0].startswith(f"Paint track {a}")
    assert (ed.labels[t][y, x + 26] == a) and lab.data[t][y, x + 26] == a
    _consistent(widget)
    # the eraser too
    lab.mode = "erase"
    _mouse(lab, [lab.data_to_world([t, y, x])])
    assert len(ed.history) == 2 and ed.history[-1].startswith("Erase")
    assert ed.labels[t][y, x] == 0
    # a drag in camera mode moves the camera and selects nothing
    lab.mode = "pan_zoom"
    widget.select(None)
    _mouse(lab, [lab.data_to_world([t, y, x + 20]), lab.data_to_world([t, y + 30, x + 20])])
    assert widget.primary is None and len(ed.history) == 2
    _press(viewer, qtbot, "Control-Z")
    _press(viewer, qtbot, "Control-Z")
    _assert_same(_state(widget), start)


def test_review_list_moves_time_and_selects(make_napari_viewer, movie, tmp_path, qtbot):
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    ed = widget.editor
    # make a doubtful event: split a cell in one middle frame (a track of one frame)
    a = _pick(ed, lambda i, f, l, p: l - f >= 4 and 0 < f + 2 < T - 1)
    t = ed.track(a)[0] + 2
    _click(widget, viewer, t, a)
    _button(widget, qtbot, "split")
    widget.refresh_review()
    n = widget.review_list.count()
    assert n > 0
    assert widget.review_box.title().startswith(f"Review: {n} doubtful event")
    fm = widget.review_list.fontMetrics().height()
    assert widget.review_list.minimumHeight() >= 12 * fm  # a dozen rows in view, not seven
    cands = ed.review_candidates(limit=300)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    widget.goto(0 if cands[0].frame else T - 1)
    widget.select(None)
    k = 0
    item = widget.review_list.item(k)
    widget.review_list.scrollToItem(item)
    rect = widget.review_list.visualItemRect(item)
    qtbot.mouseClick(widget.review_list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    c = cands[k]
    assert widget.current_frame() == c.frame
    assert widget.primary == c.track_id
    np.testing.assert_allclose(getattr(viewer, "scene", viewer).camera.center[-2:], (c.y, c.x), atol=1e-6)


def test_tree_view_click_selects(make_napari_viewer, movie, tmp_path, qtbot):
    viewer = make_napari_viewer(show=True)
    widget, lab = _setup(viewer, movie, tmp_path)
    ed = widget.editor
    view = widget.lineage_view
    a = _pick(ed, lambda i, f, l, p: l - f >= 3)
    t = ed.track(a)[0] + 2
    pt = view.scene_pos(a, t)
    view.centerOn(pt)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.mapFromScene(pt))
    assert widget.current_frame() == t and widget.primary == a
    # the time marker follows the slider
    widget.goto(t + 1)
    assert view.time == t + 1
    # daughters sit right below their mother
    rows = view.rows
    for i, f, l, p in ed.lineage.tolist():
        if p:
            assert rows[i] > rows[p]


def test_autosave_and_restore(make_napari_viewer, movie, tmp_path, qtbot):
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path, autosave_delay_ms=50)
    ed = widget.editor
    project = default_project_path(tmp_path / "movie.tif")
    qtbot.waitUntil(lambda: (project / "state.npz").is_file(), timeout=10_000)
    a = _pick(ed, lambda i, f, l, p: l - f >= 3)
    t = ed.track(a)[0] + 1
    _click(widget, viewer, t, a)
    _button(widget, qtbot, "delete_cell")
    qtbot.waitUntil(lambda: "(1 correction)" in widget.save_info.text(), timeout=10_000)
    assert project.name in widget.save_info.text()
    edited = np.array(lab.data)
    widget.unbind()
    viewer.close()

    # a new session on the same movie: the question is asked, the answer Yes restores
    viewer2 = make_napari_viewer()
    asked = []
    widget2, lab2 = _setup(viewer2, movie, tmp_path,
                           ask_restore=lambda p, text: asked.append((p, text)) or True)
    assert asked and asked[0][0] == project and "1 edit" in asked[0][1]
    np.testing.assert_array_equal(lab2.data, edited)
    assert widget2.editor.history and widget2.editor.can_undo
    _press(viewer2, qtbot, "Control-Z")
    np.testing.assert_array_equal(lab2.data, movie.labels)
    widget2.unbind()

    # answering No starts from the layer and keeps the old project as a backup
    viewer3 = make_napari_viewer()
    widget3, lab3 = _setup(viewer3, movie, tmp_path, ask_restore=lambda *_: False)
    np.testing.assert_array_equal(lab3.data, movie.labels)
    assert list(tmp_path.glob("movie.tif.tracks.backup-*"))
    widget3.unbind()


def test_corrections_of_a_movie_without_a_file_are_autosaved_and_offered_back(
        make_napari_viewer, movie, tmp_path, qtbot):
    """An array made in Python has no file to save beside: its corrections go to the
    per-user autosave folder, keyed by the movie's pixels, and come back with it."""
    from napari_cosine_tracker.core.edit import autosave_root

    def layers(viewer):
        viewer.add_image(movie.images, name="movie")  # no file
        return viewer.add_labels(movie.labels.astype(np.uint32), name="movie cells",
                                 metadata={OUTPUT_KEY: "labels", LINEAGE_KEY: movie.lineage.copy()})

    viewer = make_napari_viewer()
    lab = layers(viewer)
    widget = CorrectionWidget(viewer, autosave_delay_ms=50,
                              ask_restore=lambda *_: pytest.fail("nothing to restore yet"))
    viewer.window.add_dock_widget(widget, area="right")
    widget.bind(lab)
    project = widget.project_path
    assert project.parent == autosave_root()
    a = _pick(widget.editor, lambda i, f, l, p: l - f >= 3)
    _click(widget, viewer, widget.editor.track(a)[0] + 1, a)
    _button(widget, qtbot, "delete_cell")
    widget.flush_autosave()
    qtbot.waitUntil(lambda: "(1 correction)" in widget.save_info.text(), timeout=10_000)
    assert "no file" in widget.save_info.text() and str(autosave_root()) in widget.save_info.text()
    assert (project / "state.npz").is_file()
    edited = np.array(lab.data)
    widget.unbind()
    viewer.close()

    viewer2 = make_napari_viewer()
    lab2 = layers(viewer2)
    asked = []
    widget2 = CorrectionWidget(viewer2, ask_restore=lambda p, t: asked.append(p) or True)
    viewer2.window.add_dock_widget(widget2, area="right")
    widget2.bind(lab2)
    assert asked == [project]
    np.testing.assert_array_equal(lab2.data, edited)
    assert widget2.editor.can_undo  # the edit history came back too
    widget2.unbind()


def test_a_corrupted_autosave_is_reported_and_set_aside(make_napari_viewer, movie, tmp_path):
    """A damaged project folder beside the movie: a clear warning, the damaged files kept
    as a backup, and the layer's cells used as they are."""
    viewer = make_napari_viewer()
    project = default_project_path(tmp_path / "movie.tif")
    project.mkdir()
    (project / "state.npz").write_bytes(b"PK\x03\x04 not a real archive")
    widget, lab = _setup(viewer, movie, tmp_path)
    np.testing.assert_array_equal(lab.data, movie.labels)
    backups = list(tmp_path.glob("movie.tif.tracks.backup-*"))
    assert backups and (backups[0] / "state.npz").read_bytes().startswith(b"PK")
    assert widget.editor is not None and not widget.editor.history


def test_export_buttons_write_files(make_napari_viewer, movie, tmp_path, qtbot, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    from napari_cosine_tracker.core.io import read_ctc_result

    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    a = _pick(widget.editor, lambda i, f, l, p: l - f >= 3)
    _click(widget, viewer, widget.editor.track(a)[0], a)
    _press(viewer, qtbot, "Shift-Delete")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out / "RES"))
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(out / "tracks"), ""))
    qtbot.mouseClick(widget.export_buttons["ctc"], Qt.MouseButton.LeftButton)
    labels, lineage = read_ctc_result(out / "RES")
    np.testing.assert_array_equal(np.asarray(labels), widget.editor.labels)
    np.testing.assert_array_equal(lineage, widget.editor.lineage)
    qtbot.mouseClick(widget.export_buttons["csv"], Qt.MouseButton.LeftButton)
    text = (out / "tracks.csv").read_text().splitlines()
    assert text[0].startswith("id,parent_id,track_id")
    import csv

    assert all(int(r["track_id"]) != a for r in csv.DictReader(text))  # the deleted track is gone
    qtbot.mouseClick(widget.export_buttons["geff"], Qt.MouseButton.LeftButton)
    assert (out / "tracks.zarr").is_dir()
    # a calibrated layer: the exports carry its pixel size and frame interval, the CSV the
    # movie's intensities
    lab.scale = (5.0, 0.5, 0.5)
    csv_path = widget.export("csv", out / "calibrated.csv")
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"mean_intensity", "y_um", "time_min"} <= set(header)
    from napari_cosine_tracker.core.geffio import read_geff

    assert read_geff(widget.export("geff", out / "calibrated.zarr")).pixel_size == (0.5, 0.5)


def test_screenshot_with_both_docks(make_napari_viewer, tmp_path, qtbot):
    """The viewer as a biologist sees it while correcting (``docs/screenshot_correction.png``
    is rewritten when ``NCT_SCREENSHOT=1``)."""
    import os

    import imageio.v3 as iio

    big = make_synthetic_movie(n_frames=30, shape=(256, 256), seed=0)
    viewer = make_napari_viewer(show=True)
    widget, lab = _setup(viewer, big, tmp_path)
    ed = widget.editor
    # a division away from the frame edge
    mother = next(int(p) for p in ed.lineage[:, 3]
                  if p and 40 < min(ed.centroids(ed.track(int(p))[1])[int(p)]) and
                  max(ed.centroids(ed.track(int(p))[1])[int(p)]) < 216)
    t = ed.track(mother)[1]
    widget.goto(t)
    y, x = ed.centroids(t)[mother]
    _click(widget, viewer, t, mother)
    b = _neighbour(ed, t, mother)
    _click(widget, viewer, t, b, shift=True)
    widget.goto(t, y, x)
    getattr(viewer, "scene", viewer).camera.zoom = 2.2
    main_window(viewer).resize(1500, 950)
    qtbot.wait(300)
    img = viewer.screenshot(canvas_only=False, flash=False)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert canvas[..., :3].std() > 10, "canvas is blank"
    assert widget.isVisible() and widget.lineage_view.isVisible()
    out = REPO / "docs" / "screenshot_correction.png" if os.environ.get("NCT_SCREENSHOT") \
        else tmp_path / "screenshot_correction.png"
    iio.imwrite(out, img)


def test_the_panels_share_one_dock_as_tabs(make_napari_viewer, movie, tmp_path, qtbot):
    """Docking Track correction beside the tracker used to squeeze the tracker into a thin
    strip: the panels now share one place, as tabs, each at full height."""
    from qtpy.QtWidgets import QDockWidget

    from napari_cosine_tracker.plugin.napari_private import main_window
    from napari_cosine_tracker.plugin.plots_widget import PlotsWidget
    from napari_cosine_tracker.plugin.widget import TrackerWidget

    viewer = make_napari_viewer(show=True)
    tracker = TrackerWidget(viewer)
    viewer.window.add_dock_widget(tracker, name="Segment and track cells", area="right")
    widget, lab = _setup(viewer, movie, tmp_path)  # docks Track correction on the right
    plots = PlotsWidget(viewer)
    viewer.window.add_dock_widget(plots, name="Cell and track plots", area="right")
    qtbot.wait(50)
    main = main_window(viewer)

    def dock(w):
        p = w.parentWidget()
        while not isinstance(p, QDockWidget):
            p = p.parentWidget()
        return p

    d_tracker, d_corr, d_plots = dock(tracker), dock(widget), dock(plots)
    assert set(main.tabifiedDockWidgets(d_tracker)) == {d_corr, d_plots}
    d_tracker.raise_()
    qtbot.wait(50)
    assert d_tracker.height() > 0.6 * main.height()  # a whole tab, not a strip
    tracker.shutdown()


def test_a_long_movie_is_corrected_on_disk(make_napari_viewer, movie, tmp_path, qtbot,
                                           monkeypatch):
    """Above the memory budget the editor's copy and the layer's are memory-mapped files,
    not two more copies of the stack in memory; editing and undo work the same."""
    import napari_cosine_tracker.core.buffers as buffers

    monkeypatch.setattr(buffers, "MEMORY_BUDGET_BYTES", 1024)  # this small movie is "long"
    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    assert isinstance(lab.data, np.memmap)
    before = _state(widget)
    a = int(widget.editor.lineage[0, 0])
    t = int(widget.editor.track(a)[0])
    _click(widget, viewer, t, a)
    _button(widget, qtbot, "delete_cell")
    assert not (np.asarray(lab.data[t]) == a).any()
    _button(widget, qtbot, "undo")
    np.testing.assert_array_equal(_state(widget)[0], before[0])
    assert isinstance(lab.data, np.memmap) and widget.editor.check() == []


def test_tabs_show_the_panels_names(make_napari_viewer, qtbot):
    """Opened from the Plugins menu, the panels' tabs read "Segment and track cells" and
    "Track correction", not names cut off by the plugin's."""
    from qtpy.QtWidgets import QTabBar

    from napari_cosine_tracker.plugin.napari_private import main_window

    viewer = make_napari_viewer(show=True)
    _, tracker = viewer.window.add_plugin_dock_widget("napari-cosine-tracker",
                                                      "Segment and track cells")
    viewer.window.add_plugin_dock_widget("napari-cosine-tracker", "Track correction")
    qtbot.wait(50)
    tabs = {bar.tabText(i) for bar in main_window(viewer).findChildren(QTabBar)
            for i in range(bar.count())}
    assert {"Segment and track cells", "Track correction"} <= tabs, tabs
    tracker.shutdown()


def test_save_project_then_open_it_with_file_open_and_undo(make_napari_viewer, movie, tmp_path,
                                                           qtbot):
    """Save project writes one folder; opening it (the reader: File -> Open) brings back the
    movie, the corrected cells and their tracks, and the correction widget continues its
    history, undo included; the CLI exports it."""
    from napari_cosine_tracker.core.cli import main
    from napari_cosine_tracker.core.io import read_ctc_result
    from napari_cosine_tracker.plugin.reader import napari_get_reader

    viewer = make_napari_viewer()
    widget, lab = _setup(viewer, movie, tmp_path)
    a = _pick(widget.editor, lambda i, f, l, p: l - f >= 3)
    _click(widget, viewer, widget.editor.track(a)[0] + 1, a)
    _button(widget, qtbot, "delete_cell")
    edited = np.array(lab.data)
    folder = widget.save_project(tmp_path / "experiment")
    assert folder == tmp_path / "experiment.tracks" and (folder / "state.npz").is_file()
    history = list(widget.editor.history)
    widget.unbind()
    viewer.close()

    viewer2 = make_napari_viewer()
    layers = napari_get_reader(str(folder))(str(folder))
    assert [kind for *_, kind in layers] == ["image", "labels", "tracks"]
    for data, meta, kind in layers:
        getattr(viewer2, f"add_{kind}")(data, **meta)
    lab2 = viewer2.layers["movie cells"]
    np.testing.assert_array_equal(lab2.data, edited)
    widget2 = CorrectionWidget(viewer2, ask_restore=lambda *_: pytest.fail("no question"))
    viewer2.window.add_dock_widget(widget2, area="right")
    widget2.bind(lab2)
    assert widget2.project_path == folder and widget2.editor.history == history
    _press(viewer2, qtbot, "Control-Z")
    np.testing.assert_array_equal(lab2.data, movie.labels)  # undone after reopening
    widget2.unbind()

    assert main(["export", str(folder), "--format", "ctc", "-o", str(tmp_path / "RES")]) == 0
    labels, _ = read_ctc_result(tmp_path / "RES")
    assert np.asarray(labels).max() > 0

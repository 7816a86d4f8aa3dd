"""Section 4, cell detection: the clustering settings (rows built from ClusterParams'
own metadata), the live re-clustering of the frames under the slider, Apply to all frames."""

from __future__ import annotations

from dataclasses import replace

from napari.qt.threading import create_worker
from qtpy.QtWidgets import QHBoxLayout, QPushButton

from napari_cosine_tracker.core.cluster import ClusterParams
from napari_cosine_tracker.core.paramspec import specs
from napari_cosine_tracker.core.track import TrackParams
from napari_cosine_tracker.core.workflow import Phase

from ..layers import PREVIEW_KEY
from ..params_form import ParamsForm, param_row
from .common import group_box, note


class DetectionSection:
    """Live tuning of the clustering and re-tracking with it."""

    def _build_detection(self):
        """The clustering rows, the division setting, Apply and Defaults."""
        # rows built from ClusterParams' own metadata, as the command line's flags are
        self.params_box = ParamsForm(ClusterParams)
        self.param_widgets = {s.name: self.params_box[s.name] for s in specs(ClusterParams)}
        # A tracking setting, not a clustering one: it shows with "Apply to all frames".
        spec = next(s for s in specs(TrackParams) if s.name == "min_daughter_ratio")
        self.daughter_ratio = param_row(spec)
        self.daughter_ratio.tooltip += ("\nUsed when the cells are linked: press “Apply to all "
                                        "frames” after changing it.")
        self.params_box.append(self.daughter_ratio)
        self.apply_button = QPushButton("Apply to all frames")
        self.apply_button.setToolTip("Find the cells in every frame with these settings and "
                                     "link them into tracks again.")
        self.defaults_button = QPushButton("Defaults")
        self.defaults_button.setToolTip("Back to the recommended settings.")
        prow = QHBoxLayout()
        prow.addWidget(self.apply_button, 1)
        prow.addWidget(self.defaults_button)
        self.params_info = note("Changes show at once on the two frames under the time "
                                "slider.")
        return group_box("4 · Cell detection (live)", self.params_box, prow,
                         self.params_info)

    def params(self) -> ClusterParams:
        """The clustering parameters shown in the widget, over the model's recommendations
        for those it does not show."""
        return replace(self._model_params(), **{n: w.value for n, w in self.param_widgets.items()})

    def _on_params_changed(self, *_):
        self.controller.params = self.params()
        self._save_settings()
        if self.session is not None and self.controller.phase != Phase.TRACKING:
            self._debounce.start()

    def _on_track_params_changed(self, *_):
        self.controller.daughter_ratio = float(self.daughter_ratio.value)
        self._save_settings()
        if self._tracked:
            self.params_info.setText("Press “Apply to all frames” to link the cells again with "
                                     "the new division setting.")

    def _on_time_changed(self, *_):
        if self._stale and self.session is not None:
            self._debounce.start()

    def reset_params(self):
        """"Defaults": back to the settings recommended for the chosen model (or the built-in
        defaults), the division setting included."""
        self._reset_cluster_params()
        self.daughter_ratio.value = TrackParams().min_daughter_ratio

    def _reset_cluster_params(self):
        self._model_params_cache = None  # the folder's config may have been re-tuned
        defaults = self._model_params()
        for name, w in self.param_widgets.items():
            w.value = getattr(defaults, name)

    def _current_pair(self):
        t = int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim >= 3 else 0
        return max(t, 1)

    def relabel_current(self):
        """Re-cluster the frame pair under the time slider with the current parameters."""
        s = self.session
        if s is None or self.controller.phase in (Phase.RUNNING, Phase.TRACKING, Phase.TRAINING) or self._job == "apply":
            return  # a running job picks the new settings up for the frames still to come
        if self._release_corrected_layers():
            self.params_info.setText("The result is being corrected; press “Apply to all "
                                     "frames” to track again into a new layer.")
            self._update_state()
            return
        if self.labels_layer is None or self.labels_layer not in self.viewer.layers:
            return
        t = min(self._current_pair(), s.n_frames - 1)
        if s.frames_done <= t:
            self.params_info.setText(f"Frame {t} has not been through the network yet; the "
                                     "new settings will be used when it has.")
            return
        if self._live_worker is not None:
            self._live_again = True
            return
        params = self.params()
        if self._tracked and params == self._applied_params:
            self._restore_tracking()
            return
        worker = create_worker(self.controller.cluster_pair, t, params, _start_thread=False,
                               _connect={"errored": self._on_error})
        self._live_worker = worker
        worker.returned.connect(self._on_live_return)
        worker.finished.connect(self._on_live_finished)
        worker.start()

    def _on_live_return(self, res):
        if self._closed:
            return
        t, la, lb = res
        if self.controller.phase in (Phase.RUNNING, Phase.TRACKING) or self._job == "apply":
            return  # the run's own preview is writing the labels, or a tracking is coming
        self._write_pair(t, la, lb)
        if self._tracked or self._stale:
            self._stale = True
            self.params_info.setText(
                f"<b>Frames {t - 1} and {t} show the new settings.</b> Move the time slider to "
                "check other frames; press “Apply to all frames” to track the whole movie with "
                "them.")
        self._update_state()

    def _restore_tracking(self):
        """Back to the settings of the full tracking: put its frames back, nothing is stale."""
        lab = self.labels_layer
        for tt, frame in self._backup.items():
            lab.data[tt] = frame
        self._backup.clear()
        lab.metadata.pop(PREVIEW_KEY, None)
        lab.refresh()
        self._stale = False
        self.params_info.setText("Showing the tracking made with these settings.")
        self._update_state()

    def _on_live_finished(self):
        if self._closed:
            return
        self._live_worker = None
        self._update_state()
        if self._live_again and self._worker is None:
            self._live_again = False
            self.relabel_current()

    def apply_to_all(self):
        """Re-cluster every frame pair with the current parameters and re-link the tracks."""
        s = self.session
        if s is None or self._worker is not None or s.frames_done < s.n_frames:
            return
        self._debounce.stop()  # the tracking uses the current settings anyway
        self._live_again = False
        self._release_corrected_layers()
        self.controller.phase = Phase.TRACKING
        key = self.controller.session_key
        self._start("apply", self.controller.track_job, self._tracks_layer_for,
                    total=s.n_frames - 1,
                    desc="Finding and linking cells", on_yield=self._on_run_yield,
                    on_return=lambda res: self._on_run_return(res, key))

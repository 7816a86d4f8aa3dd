"""What the widget remembers between sessions (QSettings): the model, device, resize factor
and, per model, the clustering settings."""

from __future__ import annotations

from napari_cosine_tracker.core.track import TrackParams

from .common import DEVICES


class Settings:
    """Loading and saving the widget's settings."""

    def _load_settings(self):
        s = self._settings
        src = s.value("model/source")
        if src in self.model_source.choices:
            self.model_source.value = src
        folder = s.value("model/folder")
        if folder:
            self.model_folder.value = folder
        dev = s.value("model/device")
        if dev in DEVICES:
            self.device.value = dev
        try:
            self.scale.value = min(10.0, max(0.1, float(s.value("model/scale", 1.0))))
        except (TypeError, ValueError):
            pass
        self.show_pca.value = str(s.value("view/show_pca", "false")).lower() == "true"
        self.auto_scale.value = str(s.value("model/auto_scale", "true")).lower() == "true"
        try:
            self.daughter_ratio.value = min(0.95, max(0.0, float(
                s.value("tracking/min_daughter_ratio", TrackParams().min_daughter_ratio))))
        except (TypeError, ValueError):
            pass
        self._params_key = self._model_key()
        self._restore_params()

    def _restore_params(self):
        """The settings last used with the chosen model, else its recommendations."""
        # Read them all before setting any: each change saves every widget's value.
        saved = {name: self._settings.value(f"params/{self._params_key}/{name}")
                 for name in self.param_widgets}
        if all(v is None for v in saved.values()):
            self._reset_cluster_params()  # the division setting is not per model
            return
        for name, w in self.param_widgets.items():
            if saved[name] is not None:
                try:
                    w.value = float(saved[name]) if isinstance(w.value, float) else int(float(saved[name]))
                except (TypeError, ValueError):
                    pass

    def _save_settings(self):
        s = self._settings
        for name, w in self.param_widgets.items():
            s.setValue(f"params/{self._params_key}/{name}", w.value)
        s.setValue("model/source", self.model_source.value)
        s.setValue("model/folder", str(self.model_folder.value))
        s.setValue("model/device", self.device.value)
        s.setValue("model/scale", float(self.scale.value))
        s.setValue("view/show_pca", bool(self.show_pca.value))
        s.setValue("model/auto_scale", bool(self.auto_scale.value))
        s.setValue("tracking/min_daughter_ratio", float(self.daughter_ratio.value))
        s.sync()

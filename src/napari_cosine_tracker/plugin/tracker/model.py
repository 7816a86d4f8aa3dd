"""Section 2, the model: the packaged or a folder's network, the device, and the resize
factor the cells need (measured by core.cellsize)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QPushButton

from napari_cosine_tracker.core.cluster import ClusterParams
from napari_cosine_tracker.core.io import MovieError, as_movie
from napari_cosine_tracker.core.workflow import Phase, step_error
from napari_cosine_tracker.core.zoo import DEFAULT_MODEL, choose_model, list_models, resolve_model

from .common import DEVICES, MODEL_AUTO, MODEL_FOLDER, group_box, note, pipeline_module


class ModelSection:
    """Which network runs where, at which resize factor."""

    def _build_model(self):
        """Model picker, device, resize factor and Measure the cells."""
        self.model_source = ComboBox(label="Model",
                                     choices=[MODEL_AUTO] + [m.name for m in list_models()]
                                     + [MODEL_FOLDER],
                                     value=MODEL_AUTO,
                                     tooltip="The trained network that colours each cell. "
                                             "Automatic picks by the movie: label-free for a "
                                             "bright background (DIC, phase contrast), else "
                                             "fluorescence. "
                                             + "; ".join(f"{m.name}: {m.description}"
                                                         for m in list_models())
                                             + " Or a folder with a model trained on your "
                                               "own data.")
        self.model_folder = FileEdit(label="Folder", mode="d",
                                     tooltip="Folder with weights.safetensors and config.json.")
        self.device = ComboBox(label="Run on", choices=list(DEVICES), value="Automatic",
                               tooltip="Where the network runs. Automatic picks a graphics card "
                                       "(GPU) when there is one, which is much faster.")
        self.scale = FloatSpinBox(label="Resize frames by", value=1.0, min=0.1, max=10.0, step=0.1,
                                  tooltip="The shipped model knows nuclei about 50-60 pixels "
                                          "across. For cells half that size use 2, for cells "
                                          "twice that size 0.5. Changing it runs the network "
                                          "again.")
        self.model_box = Container(widgets=[self.model_source, self.model_folder, self.device,
                                            self.scale])
        self.auto_scale = CheckBox(text="Measure the cells before a new run",
                                   tooltip="On a movie or model not measured yet, Run first "
                                           "measures the cells and sets “Resize frames by”. "
                                           "Typing a factor yourself turns this off.")
        self.estimate_button = QPushButton("Measure the cells")
        self.estimate_button.setToolTip("Run the network on a few frames from the middle of "
                                        "the movie, measure the cells it finds and set “Resize "
                                        "frames by” so they come out the size the model knows. "
                                        "A few seconds.")
        self.scale_info = note("Not sure how large your cells are for the model? "
                               "Measure the cells.")
        self.model_info = note()
        return group_box("2 · Model", self.model_box, self.auto_scale.native,
                         self.estimate_button, self.scale_info, self.model_info)

    def _model_key(self) -> str:
        """Clustering settings are remembered per model: settings tuned for one network mean
        little for another (an upgraded shipped model included). The key is a hash of the
        weights, so the same model in another folder keeps its settings."""
        import hashlib

        weights = self._model_dir() / "weights.safetensors"
        try:
            st = weights.stat()
        except OSError:
            return "none"
        stamp = (str(weights), st.st_size, st.st_mtime_ns)
        if self._model_key_cache[0] != stamp:
            digest = hashlib.sha256()
            with open(weights, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._model_key_cache = (stamp, digest.hexdigest()[:16])
        return self._model_key_cache[1]

    def _model_params(self) -> ClusterParams:
        """The chosen model's recommended clustering parameters (built-in defaults if none)."""
        from napari_cosine_tracker.core.model import ModelError, read_model_config

        folder = self._model_dir()
        if self._model_params_cache is None or self._model_params_cache[0] != str(folder):
            defaults = ClusterParams()
            try:
                defaults = pipeline_module().default_params(read_model_config(folder))[0]
            except (ModelError, ImportError, TypeError, ValueError, OSError):
                pass
            self._model_params_cache = (str(folder), defaults)
        return self._model_params_cache[1]

    def _model_dir(self) -> Path:
        if self.model_source.value == MODEL_FOLDER:
            return Path(self.model_folder.value)
        if self.model_source.value == MODEL_AUTO:
            return resolve_model(self._auto_model()[0])
        return resolve_model(self.model_source.value)

    def _auto_model(self) -> tuple[str, str]:
        """The packaged model for the chosen movie and why (cached per movie data)."""
        layer = self.movie_layer
        key = (id(layer), id(getattr(layer, "data", None)))
        if self._auto_cache is None or self._auto_cache[0] != key:
            movie, msg = self._check_movie()
            try:
                choice = ((DEFAULT_MODEL, "no movie chosen yet") if movie is None
                          else choose_model(movie))
            except (MovieError, OSError, ValueError) as e:  # a bad frame: the run will say
                choice = (DEFAULT_MODEL, f"its frames could not be read to choose ({e})")
            self._auto_cache = (key, choice)
        return self._auto_cache[1]

    def _device(self) -> str:
        return DEVICES[self.device.value]

    def _key(self):
        layer = self.movie_layer
        return (id(layer), id(getattr(layer, "data", None)), str(self._model_dir()),
                self._device(), float(self.scale.value))

    def _on_model_changed(self, *_):
        key = self._model_key()
        if key != self._params_key:  # another network: the settings last used with it
            self._params_key = key
            self._restore_params()
        self._save_settings()
        self._update_state()

    def _describe_model(self):
        from napari_cosine_tracker.core.devices import describe_devices, resolve_device

        if self.model_source.value == MODEL_FOLDER:
            d = self._model_dir()
            ok = (d / "weights.safetensors").is_file() and (d / "config.json").is_file()
            where = (f"Model folder {d}." if ok else
                     f"<span style='color:#ff7b72'>{d} has no weights.safetensors + "
                     "config.json; choose a model folder</span>")
        else:
            name = self.model_source.value
            chosen = ""
            if name == MODEL_AUTO:
                name, why = self._auto_model()
                chosen = f"<b>{name}</b> for this movie ({why}). "
            entry = next(m for m in list_models() if m.name == name)
            ok = entry.available
            where = (chosen + entry.description if ok else
                     f"<span style='color:#ff7b72'>The {entry.name} model is missing from this "
                     "installation; choose a model folder.</span>")
        found = f"Devices found: {describe_devices()}."
        try:
            resolve_device(self._device())
        except ValueError:
            ok = False
            found += (f" <span style='color:#ff7b72'>No {self.device.value} on this computer: "
                      "choose Automatic or CPU.</span>")
        if self.session is not None and self.controller.session_key == self._key():
            found += f" Running on {self.session.device_description}."
        return ok, f"{where}<br>{found}"

    def estimate_scale(self):
        """Measure the cells in a few frames of the movie and set *Resize frames by* so they
        come out the size the model was trained on. Runs in the background; Cancel stops it."""
        from napari_cosine_tracker.core.cellsize import iter_estimate_scale

        if self.controller.phase != Phase.IDLE or self._worker is not None:
            return None
        movie, msg = self._check_movie()
        if msg:
            show_warning(msg)
            return None
        layer = self.movie_layer
        movie = as_movie(layer.data, name=layer.name)
        model_dir, device, rounds = self._model_dir(), self._device(), 6
        self._estimate = (self._measure_key(), None)
        self.controller.phase = Phase.ESTIMATING

        def job():
            try:
                steps = iter_estimate_scale(movie, model_dir, device=device, max_rounds=rounds,
                                            tree_process=True)
                while True:
                    try:
                        step = next(steps)
                    except StopIteration as stop:
                        # shown by _on_finished (_show_estimate), after the last step
                        self._estimate = (self._estimate[0], stop.value)
                        return
                    yield step
                    if self.controller.stop.is_set():
                        return
            except Exception as e:
                raise step_error("Measuring the cells failed", e) from e

        def shown(step):
            if self._job != "estimate" or self._estimate[0] is None:  # the result is shown
                return
            self.scale_info.setText(f"Trying {step[0]:.2f}: cells {step[1]:.0f} model pixels "
                                    f"across ({step[2]} cells)…")
            # last: napari's progress bar may process pending events, the job's end included
            self._step(1)

        return self._start("estimate", job, total=2 * rounds + 1, desc="Measuring the cells",
                           on_yield=shown)

    def _show_estimate(self):
        """The measured cell size, once the estimate job has ended (on the GUI thread)."""
        key, est = self._estimate
        self._estimate = (None, None)  # first: late progress steps are dropped from now on
        if est is None:
            self.scale_info.setText("Stopped; “Resize frames by” is unchanged.")
            return
        self.scale_info.setText(est.describe())
        self._measured = key  # measured, even where no cells were found
        if np.isfinite(est.cell_diameter):  # cells were found
            self._setting_scale = True  # not the user typing: keep auto_scale
            try:
                self.scale.value = round(est.scale, 2)  # within the spin box's range
            finally:
                self._setting_scale = False

    def _measure_key(self):
        """What a measured cell size holds for: this movie's data with this model."""
        return self._key()[:3]  # movie layer, its data, model: not device or scale

    def _on_scale_typed(self, *_):
        if not self._setting_scale:  # the user chose a factor: keep it
            self.auto_scale.value = False

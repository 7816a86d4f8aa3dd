"""Section 1, the movie: the image layer to track, or a file or folder opened here."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container
from napari.layers import Image
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QMenu, QToolButton

from napari_cosine_tracker.core.io import MovieError, as_movie
from napari_cosine_tracker.core.workflow import Phase

from ..layers import OUTPUT_KEY, contrast_limits, name_time_axis
from .common import MODEL_AUTO, group_box, note


class MovieSection:
    """Choosing and checking the movie (an image layer, time first)."""

    def _build_movie(self):
        """The movie picker, Open… and what the movie is."""
        self.movie_combo = ComboBox(label="Movie", choices=self._movie_choices,
                                    tooltip="The time-lapse to track: an image layer with time as "
                                            "its first axis (frames, height, width).")
        self.open_button = QToolButton()
        self.open_button.setText("Open…")
        self.open_button.setToolTip("Open a movie from disk: a multi-page TIFF, or a folder of "
                                    "TIFF frames such as a Cell Tracking Challenge sequence (01/).")
        self.open_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.open_button)
        menu.addAction("Multi-page TIFF file…", self._open_file_dialog)
        menu.addAction("Folder of TIFF frames…", self._open_folder_dialog)
        self.open_button.setMenu(menu)
        row = QHBoxLayout()
        row.addWidget(Container(widgets=[self.movie_combo]).native, 1)
        row.addWidget(self.open_button)
        self.movie_info = note()
        return group_box("1 · Movie", row, self.movie_info)

    def _movie_choices(self, *_):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and OUTPUT_KEY not in layer.metadata]

    def _refresh_movies(self, *_):
        self.movie_combo.reset_choices()
        self._on_movie_changed()

    def _on_layer_inserted(self, event):
        name_time_axis(self.viewer)
        self.movie_combo.reset_choices()
        layer = getattr(event, "value", None)
        # a movie just opened is the one the user wants to track (unless a run is on)
        if isinstance(layer, Image) and OUTPUT_KEY not in layer.metadata and \
                self._worker is None and self.controller.phase == Phase.IDLE:
            self.movie_combo.value = layer
        self._on_movie_changed()

    def reset_choices(self, *_):  # napari calls this when layers change
        self._refresh_movies()

    @property
    def movie_layer(self) -> Image | None:
        return self.movie_combo.value

    def _check_movie(self):
        """(movie, None) or (None, message) for the selected layer; reads no pixels."""
        layer = self.movie_layer
        if layer is None:
            return None, "Choose an image layer, or open a movie with Open…"
        if getattr(layer, "rgb", False):
            return None, (f"“{layer.name}” is a colour (RGB) image. The tracker needs one "
                          "grey-level channel: split the channels (right-click the layer) and "
                          "pick the nuclear one.")
        if getattr(layer, "multiscale", False):
            return None, (f"“{layer.name}” is a multi-resolution image; open the "
                          "full-resolution movie.")
        data = layer.data
        if data.ndim == 2:
            return None, (f"“{layer.name}” is a single image "
                          f"({data.shape[0]} × {data.shape[1]}). "
                          "Tracking needs a movie: frames × height × width.")
        if data.ndim != 3:
            return None, (f"“{layer.name}” has {data.ndim} dimensions {tuple(data.shape)}. "
                          "Tracking needs frames × height × width: for a 3-D or multichannel "
                          "movie, keep one channel or plane (or a projection) first.")
        try:
            movie = as_movie(data, name=layer.name)
        except MovieError as e:
            return None, str(e)
        if movie.shape[0] < 2:
            return None, f"“{layer.name}” has a single frame; tracking needs at least two."
        return movie, None

    def _on_movie_changed(self, *_):
        if self.model_source.value == MODEL_AUTO and self._model_key() != self._params_key:
            self._on_model_changed()  # another movie, another model: its settings
        movie, msg = self._check_movie()
        if msg:
            self.movie_info.setText(f"<span style='color:#ff7b72'>{msg}</span>")
        else:
            T, Y, X = movie.shape
            self.movie_info.setText(f"{T} frames of {Y} × {X} pixels ({movie.dtype}).")
        self._update_state()

    def _open_file_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open a time-lapse movie", "",
                                              "TIFF movies (*.tif *.tiff)")
        if path:
            self.open_movie(path)

    def _open_folder_dialog(self):
        path = QFileDialog.getExistingDirectory(self, "Open a folder of TIFF frames")
        if path:
            self.open_movie(path)

    def open_movie(self, path) -> Image | None:
        """Open a movie file or folder as an image layer and select it (frames stay on disk)."""
        from napari_cosine_tracker.core.io import read_movie

        try:
            movie = read_movie(path)
        except MovieError as e:
            self.movie_info.setText(f"<span style='color:#ff7b72'>{e}</span>")
            show_warning(f"Could not open the movie: {e}")
            return None
        p = Path(path)
        layer = self.viewer.add_image(movie, name=p.name if p.is_dir() else p.stem,
                                      contrast_limits=contrast_limits(movie),
                                      metadata={"source_path": str(p)})
        self.movie_combo.value = layer
        return layer

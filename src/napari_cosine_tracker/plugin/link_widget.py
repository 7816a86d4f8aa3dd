"""*Track these labels*: link a Labels layer the user already has (cellpose, StarDist, painted
by hand, a CTC folder opened in napari) into tracks, as ``napari-cosine-tracker link`` does.

The linking runs in a napari thread worker, so the viewer stays responsive; the result is the
same pair of layers the tracker writes (Labels of track ids with the lineage in its metadata,
and a Tracks layer with the division graph), on the input layer's scale and translate, ready
for the *Track correction* widget.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_warning

from napari_cosine_tracker.core.link import LinkParams, link_labels

from .layers import name_time_axis, result_layer_data
from .params_form import ParamsForm

__all__ = ["LinkWidget"]


class LinkWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=False)
        self.native._cosine_tracker_panel = True  # see docking.PANEL_MARKER: the panels share a dock
        self.viewer = napari_viewer
        self.layer_choice = ComboBox(label="Labels", choices=self._labels_layers,
                                     tooltip="a (T, Y, X) Labels layer: one mask per cell per frame")
        self.form = ParamsForm(LinkParams)
        self.run_button = PushButton(text="Track these labels")
        self.status = Label(value="")
        self.extend([Container(widgets=[self.layer_choice], labels=True), self.form,
                     self.run_button, self.status])
        self.run_button.changed.connect(self.run)
        self.viewer.layers.events.inserted.connect(lambda e: self.layer_choice.reset_choices())
        self.viewer.layers.events.removed.connect(lambda e: self.layer_choice.reset_choices())
        self.worker = None

    def _labels_layers(self, _=None):
        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)]

    def run(self):
        layer = self.layer_choice.value
        if layer is None:
            show_warning("Track these labels: add or open a Labels layer of cell masks first.")
            return
        data = layer.data
        if data.ndim != 3:
            show_warning(f"Track these labels: '{layer.name}' has {data.ndim} dimensions; it needs "
                         "(time, y, x), one mask image per frame.")
            return
        params = self.form.value()
        self.run_button.enabled = False
        self.status.value = f"linking {data.shape[0]} frames ..."
        self.worker = create_worker(link_labels, np.asarray(data), params,
                                    _progress={"desc": "Linking cells"})
        self.worker.returned.connect(lambda out: self._show(layer, out))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(lambda: setattr(self.run_button, "enabled", True))
        self.worker.start()

    def _failed(self, error):
        self.status.value = f"failed: {error}"
        show_warning(f"Track these labels: {error}")

    def _show(self, source, out):
        tracked, lineage, info = out
        name = source.name.removesuffix(" tracked")
        for data, kwargs, kind in result_layer_data(tracked, lineage, name=name):
            kwargs.update(scale=source.scale, translate=source.translate)
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        name_time_axis(self.viewer)
        n_div = int(np.sum(np.bincount(lineage[:, 3][lineage[:, 3] > 0]) == 2)) if len(lineage) else 0
        self.status.value = (f"{len(lineage)} tracks, {n_div} divisions; cells about "
                             f"{info['diameter']:.0f} px, moving up to "
                             f"{info['max_displacement']:.1f} px a frame")

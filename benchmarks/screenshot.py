"""README screenshots on real data: the tracker widget on held-out Fluo-N2DH-SIM+/01 frames
48-64 with the shipped model and its recommended settings (docs/screenshot.png, and the
embedding overlay in docs/screenshot-embedding.png). Needs a display (xvfb-run -a).

    xvfb-run -a python benchmarks/screenshot.py
"""
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import napari
import numpy as np

from napari_cosine_tracker.core.io import read_movie
from napari_cosine_tracker.plugin.napari_private import main_window
from napari_cosine_tracker.plugin.widget import MODEL_SHIPPED

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_latency import private_qsettings  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ctc"
settings = tempfile.TemporaryDirectory(prefix="nct-screenshot-")
private_qsettings(Path(settings.name))
mov = read_movie(DATA / "Fluo-N2DH-SIM+" / "01")
data = np.stack([np.asarray(mov[t]) for t in range(48, 65)])
viewer = napari.Viewer(show=True)
viewer.add_image(data, name="Fluo-N2DH-SIM+ 01 (frames 48-64)", contrast_limits=[float(np.percentile(data, 1)), float(np.percentile(data, 99.8))])
_, w = viewer.window.add_plugin_dock_widget("napari-cosine-tracker", "Segment and track cells")
w.device.value = "CPU"
w.model_source.value = MODEL_SHIPPED
app = napari.qt.get_qapp()
w.reset_params()  # the model's recommendations, not settings remembered from earlier
w.auto_scale.value = True  # the default: Run measures the cells first
w.show_pca.value = False
w.run()
while w.is_busy():
    app.processEvents(); time.sleep(0.02)
for _ in range(50): app.processEvents(); time.sleep(0.01)
viewer.dims.set_current_step(0, 8)
main_window(viewer).resize(1500, 950)
viewer.reset_view()
for _ in range(50): app.processEvents(); time.sleep(0.01)
iio.imwrite("docs/screenshot.png", viewer.screenshot(canvas_only=False, flash=False))
w.show_pca.value = True
while w.is_busy():
    app.processEvents(); time.sleep(0.02)
w.labels_layer.visible = False
for _ in range(50): app.processEvents(); time.sleep(0.01)
iio.imwrite("docs/screenshot-embedding.png", viewer.screenshot(canvas_only=False, flash=False))
viewer.close()

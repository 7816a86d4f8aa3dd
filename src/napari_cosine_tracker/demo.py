"""Demo: a synthetic movie tracked in napari, then written and scored as a CTC sequence.

Run with ``python -m napari_cosine_tracker.demo`` (or ``make demo``). It makes the seeded
synthetic movie and writes its images (``01/``) and ground truth (``01_GT/``) under
``out/demo/``. Then it opens napari with the movie and the "Segment and track cells" widget
docked, runs the whole pipeline (network, clustering, tracking) as a user pressing Run would,
exports the result (``01_RES/``), checks it with py-ctcmetrics' validity test and prints the
official measures.

With a screen, napari stays open for exploring the result. Without one (``make demo`` then
runs under Xvfb), it saves ``out/demo/screenshot.png`` and exits. ``--no-gui`` skips napari
and writes the ground truth as a stand-in result, to check the CTC plumbing alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .core.io import write_ctc_gt, write_ctc_result, write_movie_folder
from .core.metrics import evaluate, format_table, validate
from .core.cellsize import AUTO, parse_scale
from .core.model import default_model_dir
from .core.synthetic import make_synthetic_movie


# The sample's disks are 28-44 pixels across (radius 14-22 in core.synthetic) and the shipped
# model's training nuclei about 50-60: the demo presses "Measure the cells", as the README
# tells users to do, and that sets "Resize frames by" (about 1.7 here).
SAMPLE_SCALE = "auto"


def _score(res: Path, gt: Path) -> int:
    problems = validate(res)
    if problems:
        print("result is not valid CTC:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("ctc validity check: ok")
    print(format_table(evaluate(res, gt)))
    return 0


def _under_xvfb() -> bool:
    """Whether this process runs inside ``xvfb-run`` (a virtual screen nobody looks at)."""
    pid = os.getppid()
    for _ in range(6):  # xvfb-run is a shell script: parent or grandparent of python
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        if b"xvfb-run" in cmd or b"Xvfb" in cmd:
            return True
        pid = int(stat[1])
        if pid <= 1:
            return False
    return False


def run_gui(movie_dir: Path, gt_dir: Path, res_dir: Path, screenshot: Path, *,
            model_dir=None, device: str = "auto", keep_open: bool | None = None,
            scale: float | str = 1.0) -> int:
    """Open napari on ``movie_dir``, run the tracker widget, export to ``res_dir`` and score.

    Returns the exit code (0: the result is valid CTC). ``keep_open`` None: stay open when
    there is a real screen, exit under Xvfb after saving ``screenshot``. ``scale="auto"``
    presses "Measure the cells" first.
    """
    import napari
    from qtpy.QtCore import QSettings, QTimer

    from .plugin.napari_private import main_window
    from .plugin.widget import DEVICES, MODEL_FOLDER, TrackerWidget

    if keep_open is None:
        keep_open = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            and not _under_xvfb()
    viewer = napari.Viewer(title="napari-cosine-tracker demo")
    viewer.open(str(movie_dir), plugin="napari-cosine-tracker")
    # Own settings file: the demo runs with the recommended settings and leaves the
    # user's remembered ones alone.
    settings = QSettings(str(res_dir.parent / "demo-settings.ini"), QSettings.Format.IniFormat)
    settings.clear()
    widget = TrackerWidget(viewer, settings=settings)
    if model_dir is not None and str(model_dir) in widget.model_source.choices:
        widget.model_source.value = str(model_dir)  # a packaged model, by name
    elif model_dir is not None:
        widget.model_source.value = MODEL_FOLDER
        widget.model_folder.value = str(model_dir)
    widget.reset_params()  # the chosen model's recommended settings
    widget.device.value = next(k for k, v in DEVICES.items() if v == device)
    if scale != "auto":
        widget.scale.value = scale
    viewer.window.add_dock_widget(widget, name="Segment and track cells", area="right")
    main_window(viewer).resize(1500, 950)  # room for canvas and widget in the screenshot
    widget.show_pca.value = False
    state = {"rc": 1, "t0": time.perf_counter()}

    def finish(rc):
        state["rc"] = rc
        if not keep_open:
            QTimer.singleShot(0, viewer.close)

    def on_job(job, ok):
        if not ok:
            print(f"demo: the {job or 'run'} step did not complete: {widget.run_info.text()}",
                  file=sys.stderr)
            finish(1)
            return
        if job == "estimate":
            print(widget.scale_info.text())
            QTimer.singleShot(0, widget.run)
        elif job == "run":
            print(f"tracked {widget.session.n_frames} frames on "
                  f"{widget.session.device_description} in "
                  f"{time.perf_counter() - state['t0']:.1f} s: {widget.output_info.text()}")
            viewer.dims.set_current_step(0, widget.session.n_frames // 2)
            widget.export(res_dir)
        elif job == "export":
            print(f"wrote {res_dir}")
            QTimer.singleShot(500, shoot)

    def shoot():
        viewer.reset_view()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
        print(f"screenshot: {screenshot}")
        finish(_score(res_dir, gt_dir))

    widget.job_finished.connect(on_job)
    if not widget.run_button.isEnabled():
        print(f"demo: cannot run: {widget.movie_info.text()} {widget.model_info.text()}",
              file=sys.stderr)
        viewer.close()
        return 1
    QTimer.singleShot(0, widget.estimate_scale if scale == "auto" else widget.run)
    napari.run()
    return state["rc"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_cosine_tracker.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic movie")
    parser.add_argument("--frames", type=int, default=30, help="frames of the movie (default 30)")
    parser.add_argument("--size", type=int, default=256,
                        help="width and height of the movie in pixels (default 256)")
    parser.add_argument("--no-gui", action="store_true",
                        help="no napari: write the ground truth as a stand-in result")
    parser.add_argument("--model", default=None,
                        help="a packaged model by name (`napari-cosine-tracker models`) or a "
                             "model folder (default: the default packaged model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--scale", default=SAMPLE_SCALE,
                        help="'Resize frames by' in the widget, or auto (default): press "
                             "'Measure the cells' (the sample's cells are smaller than the "
                             "nuclei the model was trained on)")
    parser.add_argument("--exit", dest="keep_open", action="store_false", default=None,
                        help="close napari after the screenshot even on a real screen")
    args = parser.parse_args(argv)

    out = Path(args.out)
    t0 = time.perf_counter()
    movie = make_synthetic_movie(n_frames=args.frames, shape=(args.size, args.size), seed=args.seed)
    T, Y, X = movie.shape
    print(f"synthetic movie: {T} frames of {Y}x{X}, {len(movie.lineage)} tracks, "
          f"{movie.n_divisions} divisions")
    write_movie_folder(out / "01", movie.images)
    write_ctc_gt(out / "01_GT", movie.labels, movie.lineage)
    print(f"wrote {out / '01'}, {out / '01_GT'}")

    no_model = args.model is None and not (default_model_dir() / "weights.safetensors").is_file()
    if no_model and not args.no_gui:
        print(f"no shipped model in {default_model_dir()} (train one, or pass --model FOLDER): "
              "skipping napari, writing the ground truth as a stand-in result", file=sys.stderr)
    if args.no_gui or no_model:
        res = write_ctc_result(out / "01_RES", movie.labels, movie.lineage)
        print(f"wrote the ground truth as a stand-in result: {res}")
        rc = _score(res, out / "01_GT")
    else:
        scale = parse_scale(args.scale)
        print("Resize frames by: " + ("measured from the cells ('Measure the cells')"
                                      if scale == AUTO else f"{scale:g}")
              + "; the sample's cells are 28-44 pixels across, the shipped model's training "
              "nuclei 50-60")
        rc = run_gui(out / "01", out / "01_GT", out / "01_RES", out / "screenshot.png",
                     model_dir=args.model, device=args.device, keep_open=args.keep_open,
                     scale=scale)
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""The ``napari-cosine-tracker`` command line.

Each subcommand is one ``_cmd_<name>(args) -> int`` function plus one ``_add_<name>(sub)``
parser block listed in :data:`COMMANDS`. Commands import what they need inside the function,
so ``--help`` stays fast and nothing here pulls in Qt or napari.

Bad input (any ``ValueError``, e.g. ``MovieError`` / ``MetricsError``, or a missing file)
prints ``error: <message>`` to stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import __version__

# Estimate the resize factor from the cells unless told (core/cellsize.py).
SCALE_DEFAULT = "auto"

__all__ = ["main", "build_parser", "COMMANDS"]


# -- evaluate ---------------------------------------------------------------------------------


def _cmd_evaluate(args) -> int:
    from .metrics import DEFAULT_METRICS, evaluate, format_table

    metrics, res, gt = args.metrics, args.res, args.gt
    # "--metrics DET TRA RES GT": argparse hands the folders to --metrics; measure names are
    # known, so the trailing values that are not measures are the folders.
    if metrics and (res is None or gt is None):
        tail = []
        while metrics and len(tail) < 2 and metrics[-1] not in DEFAULT_METRICS \
                and not metrics[-1].startswith("BC("):
            tail.insert(0, metrics.pop())
        folders = [f for f in (res, gt) if f is not None] + tail
        res, gt = (folders + [None, None])[:2]
    if res is None or gt is None:
        raise ValueError("evaluate needs a result folder and a ground-truth folder: "
                         "napari-cosine-tracker evaluate RES GT [--metrics DET TRA ...]")
    scores = evaluate(res, gt, metrics=metrics or None, fast=not args.official)
    if args.json:
        print(json.dumps(scores, indent=2, sort_keys=False))
    else:
        print(format_table(scores))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a CTC result folder against ground truth (SEG, DET, TRA, ...)",
        description="Compute the official Cell Tracking Challenge measures (py-ctcmetrics) of "
                    "a result folder (maskTTT.tif + res_track.txt) against a ground-truth "
                    "folder (SEG/, TRA/).")
    p.add_argument("res", metavar="RES", nargs="?", help="result folder, e.g. 01_RES")
    p.add_argument("gt", metavar="GT", nargs="?", help="ground-truth folder, e.g. 01_GT")
    p.add_argument("--json", action="store_true", help="print all measures as JSON")
    p.add_argument("--metrics", nargs="+", metavar="NAME",
                   help="measures to compute (default: all), e.g. SEG DET TRA LNK BC CT TF CCA")
    p.add_argument("--official", action="store_true",
                   help="run py-ctcmetrics' evaluate_sequence end to end (same numbers, slower)")
    p.set_defaults(func=_cmd_evaluate)


# -- validate ---------------------------------------------------------------------------------


def _cmd_validate(args) -> int:
    from .metrics import validate

    problems = validate(args.res)
    if problems:
        for p in problems:
            print(f"invalid: {p}")
        return 1
    print(f"{args.res}: valid CTC result")
    return 0


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a CTC result folder (exit 1 if invalid)",
                       description="Check a result folder with py-ctcmetrics' validity test "
                                   "and list the problems.")
    p.add_argument("res", metavar="RES", help="result folder, e.g. 01_RES")
    p.set_defaults(func=_cmd_validate)


# -- export -----------------------------------------------------------------------------------


def _cmd_export(args) -> int:
    from .export import export_result

    kw = {"overwrite": args.overwrite}
    if args.format in ("geff", "csv"):
        kw.update(pixel_size=args.pixel_size, frame_interval=args.frame_interval)
    elif args.pixel_size is not None or args.frame_interval is not None:
        raise ValueError("--pixel-size and --frame-interval apply to --format geff and csv")
    if args.images is not None:
        if args.format != "csv":
            raise ValueError("--images applies to --format csv (mean intensity per cell)")
        from .io import read_movie

        kw["images"] = read_movie(args.images)  # lazy: read a frame at a time
    out = export_result(args.res, args.format, args.output, **kw)
    print(f"wrote {out}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="convert a CTC result folder to GEFF, CSV or another CTC folder",
        description="Convert a result folder (maskTTT.tif + res_track.txt) to a GEFF zarr "
                    "(cells as nodes with t, y, x, area, track_id; edges within tracks and "
                    "parent -> daughter), a CSV (id, parent_id, track_id, parent_track_id, frame, y, x, "
                    "area, then measurements: speed, track duration, generation, and with "
                    "--images / --pixel-size / --frame-interval mean intensity and physical "
                    "units) or a "
                    "CTC folder. The output is written atomically.")
    p.add_argument("res", metavar="RES_DIR", help="result folder, e.g. 01_RES")
    p.add_argument("--format", required=True, choices=["geff", "csv", "ctc"],
                   help="output format")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output path, e.g. tracks.geff, cells.csv or 01_RES_copy")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--pixel-size", type=float, metavar="UM",
                   help="pixel size in micrometers (GEFF: the space axes' scale; CSV: columns "
                        "y_um, x_um, area_um2 and speed in um)")
    p.add_argument("--frame-interval", type=float, metavar="MIN",
                   help="minutes between frames (GEFF: the time axis' scale; CSV: time_min "
                        "and speed per minute)")
    p.add_argument("--images", metavar="MOVIE",
                   help="CSV: the movie, for each cell's mean intensity")
    p.set_defaults(func=_cmd_export)


# -- plot -------------------------------------------------------------------------------------


def _cmd_plot(args) -> int:
    from pathlib import Path

    from .io import read_ctc_result
    from .measure import Calibration
    from .plots import save_figure, summary_figure

    if not Path(args.res).is_dir():
        raise FileNotFoundError(f"result folder not found: {args.res}")
    labels, lineage = read_ctc_result(args.res)
    cal = Calibration.of(args.pixel_size, args.frame_interval)
    fig = summary_figure(labels, lineage, cal, title=Path(args.res).name)
    print(f"wrote {save_figure(fig, args.output, overwrite=args.overwrite)}")
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="plot cells per frame, track durations, speeds, divisions",
                       description="Summary plots of a CTC result folder, saved as PNG, SVG or "
                                   "PDF (the suffix of OUT picks the format).")
    p.add_argument("res", metavar="RES_DIR", help="result folder, e.g. 01_RES")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="e.g. summary.svg")
    p.add_argument("--pixel-size", type=float, metavar="UM", help="pixel size in micrometers")
    p.add_argument("--frame-interval", type=float, metavar="MIN", help="minutes between frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_cmd_plot)


# -- convert ----------------------------------------------------------------------------------


def _cmd_convert(args) -> int:
    from pathlib import Path

    from .export import export_result
    from .geffio import find_geff, read_geff
    from .io import write_ctc_result

    if find_geff(args.input) is not None:  # GEFF -> CTC folder
        if args.pixel_size is not None or args.frame_interval is not None:
            raise ValueError("--pixel-size and --frame-interval apply to CTC -> GEFF only (a "
                             "GEFF keeps its own calibration)")
        tracks = read_geff(args.input)
        if tracks.labels is None:
            raise ValueError(f"{args.input} links no segmentation (related_objects), and a CTC "
                             "folder needs the masks; export the GEFF with its labels")
        for note in tracks.notes:
            print(f"note: {note}", file=sys.stderr)
        if Path(args.output).exists() and not args.overwrite:
            raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
        out = write_ctc_result(args.output, tracks.labels, tracks.lineage)
    else:  # CTC result (or TRA) folder -> GEFF
        out = export_result(args.input, "geff", args.output, overwrite=args.overwrite,
                            pixel_size=args.pixel_size, frame_interval=args.frame_interval)
    print(f"wrote {out}")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert between a GEFF store and a CTC result folder, both ways",
        description="IN is a GEFF store (ours, funtracks'/motile_tracker's, or geff's CTC "
                    "converter's; with its linked segmentation) -> OUT is a CTC result folder; "
                    "or IN is a CTC result folder -> OUT is a GEFF store with the labels "
                    "linked. Written atomically.")
    p.add_argument("input", metavar="IN", help="GEFF store or CTC result folder")
    p.add_argument("output", metavar="OUT", help="CTC result folder or GEFF store to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--pixel-size", type=float, metavar="UM",
                   help="CTC -> GEFF: pixel size in micrometers (the space axes' scale)")
    p.add_argument("--frame-interval", type=float, metavar="MIN",
                   help="CTC -> GEFF: minutes between frames (the time axis' scale)")
    p.set_defaults(func=_cmd_convert)


# -- train ------------------------------------------------------------------------------------


def _cmd_train(args) -> int:
    import shlex

    from .train import run_from_args

    out = run_from_args(args, command=shlex.join(["napari-cosine-tracker", *sys.argv[1:]]))
    print(f"wrote {out}")
    return 0


def _add_train(sub) -> None:
    from .train import add_arguments

    p = sub.add_parser(
        "train", help="train a model on CTC sequences and/or synthetic movies",
        description="Train the recurrent stacked hourglass with the cosine embedding loss on "
                    "clips of consecutive frames. Writes weights.safetensors, config.json and "
                    "loss.csv; --resume continues from the last checkpoint.")
    add_arguments(p)
    p.set_defaults(func=_cmd_train)


# -- models -----------------------------------------------------------------------------------


def _cmd_models(args) -> int:
    from .zoo import DEFAULT_MODEL, list_models

    models = list_models()
    if not models:
        print("no models in this installation; reinstall the package or give a model folder")
        return 1
    width = max(len(m.name) for m in models)
    for m in models:
        default = " [default]" if m.name == DEFAULT_MODEL else ""
        missing = "" if m.available else " (weights missing from this installation)"
        print(f"{m.name:<{width}}  {m.description}{default}{missing}")
    print("\nPick one with --model NAME (track, batch, demo); any model folder works too.")
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the packaged models and what each is for",
                       description="The models that come with the package, by name; "
                                   "`track --model NAME` picks one.")
    p.set_defaults(func=_cmd_models)


def _add_channel_arg(p) -> None:
    p.add_argument("--channel", type=int, metavar="N",
                   help="the channel to track in a multichannel movie (0-based; the error for "
                        "a multichannel movie lists its channels)")


def _add_cluster_args(p) -> None:
    """The clustering settings a user tunes, built from ClusterParams' own metadata (the
    widget's rows come from the same place)."""
    from .cluster import ClusterParams
    from .paramspec import add_arguments

    add_arguments(p, ClusterParams, default_text="the model's recommended setting")


def _add_model_arg(p, where: str = "") -> None:
    """``--model NAME|FOLDER`` (``--weights`` is its older spelling, still accepted)."""
    from .zoo import DEFAULT_MODEL

    p.add_argument("--model", "--weights", dest="model", metavar="NAME|FOLDER",
                   help=f"a packaged model (`napari-cosine-tracker models` lists them), a model "
                        f"folder{where}, or auto (default): {DEFAULT_MODEL} for fluorescence, "
                        "label-free for a movie on a bright background (DIC, phase contrast)")


# -- track ------------------------------------------------------------------------------------


def _cmd_track(args) -> int:
    import time
    from dataclasses import replace

    from tqdm import tqdm

    from .cellsize import stream_at_scale
    from .cluster import ClusterParams
    from .io import read_movie, write_ctc_result
    from .paramspec import given
    from .pipeline import default_params, track_movie

    movie = read_movie(args.images, channel=args.channel)
    _check_output(args.output)  # before the run: a long run must not end in "cannot write"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = args.model
    if model in (None, "auto"):  # by the movie: fluorescence or label-free
        from .zoo import choose_model

        model, why = choose_model(movie)
        print(f"model: {model} ({why}; --model to choose)", flush=True)
    stream, est = stream_at_scale(movie, args.scale, model, args.device, half=args.half)
    if est is not None:
        print(est.describe(), flush=True)
    params, track_params = default_params(stream.config)
    params = replace(params, **given(ClusterParams, args))
    if args.min_daughter_ratio is not None:
        track_params = replace(track_params, min_daughter_ratio=args.min_daughter_ratio)
    if args.linker is not None:
        track_params = replace(track_params, linker=args.linker)
    import shutil

    from .resume import CHECKPOINT, partial_dir

    # Checkpoints (and the frames tracked so far) live beside the output until it is written.
    partial = partial_dir(args.output)
    if (partial / CHECKPOINT).exists() and not args.resume:
        print(f"an interrupted run of {args.output} left a checkpoint; starting over "
              "(--resume would have continued it)", flush=True)
        shutil.rmtree(partial)
    elif args.resume and (partial / CHECKPOINT).exists():
        print(f"resuming {args.output} from its last checkpoint", flush=True)
    bar = tqdm(total=len(movie), desc="track", unit="frame", disable=args.quiet)
    start = time.perf_counter()
    result = track_movie(movie, params=params, track_params=track_params, stream=stream,
                         progress=lambda i, n: bar.update(i - bar.n), checkpoint_dir=partial,
                         store_dir=partial / "frames",
                         checkpoint_every=args.checkpoint_every, resume=args.resume,
                         overlap=args.overlap)
    bar.close()
    write_ctc_result(args.output, result.labels, result.lineage)
    shutil.rmtree(partial, ignore_errors=True)  # the run is complete: its checkpoint goes
    seconds = time.perf_counter() - start
    n_div = int((result.lineage[:, 3] > 0).sum()) if len(result.lineage) else 0
    print(f"wrote {args.output}: {len(result.lineage)} tracks, {n_div} daughters, "
          f"{seconds / len(movie):.2f} s/frame on {stream.device}")
    if len(result.lineage) == 0:
        # An empty result must not pass for a tracked movie: say so and what to try.
        print("warning: no cells were found. Try: --scale with a factor for your cells (2 when "
              "they are about half as wide as the model's, 0.5 when twice as wide); a higher "
              f"--fg-threshold than {params.fg_threshold:g} (more pixels count as cell); or a "
              "model trained on this kind of movie (--model; `napari-cosine-tracker models` "
              "lists them; or 'train ... --init shipped' on a few corrected frames).", file=sys.stderr)
    return 0


def _check_output(out) -> None:
    """Raise now if a CTC result folder cannot be written at ``out``."""
    import os
    import tempfile
    from pathlib import Path

    from .io import _RESULT_FILE, _guard_overwrite

    out = Path(out)
    _guard_overwrite(out, _RESULT_FILE, "CTC result folder (maskTTT.tif + res_track.txt)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.probe-"))
    except OSError as e:
        raise ValueError(f"{out}: cannot write the result there ({e.strerror or e}); choose an "
                         "output folder you can write to") from e


def _add_track(sub) -> None:
    p = sub.add_parser(
        "track", help="segment and track every cell of a movie into a CTC result folder",
        description="Run the recurrent model frame by frame, cluster overlapping frame pairs "
                    "with HDBSCAN and link them by IoU. IMAGES is a CTC image folder "
                    "(tTTT.tif), a folder of numbered TIFFs or a (T, Y, X) TIFF. Defaults come "
                    "from the model's config.json.")
    p.add_argument("images", metavar="IMAGES",
                   help="movie: CTC image folder, (T, Y, X) or (T, C, Y, X) TIFF, or a "
                        "microscope file (OME-TIFF, OME-Zarr, ND2, CZI, LIF; needs the "
                        "[formats] extra)")
    p.add_argument("-o", "--output", required=True, metavar="RES_DIR", help="CTC result folder to write")
    _add_model_arg(p)
    _add_channel_arg(p)
    _add_cluster_args(p)
    from .paramspec import add_arguments
    from .track import TrackParams

    add_arguments(p, TrackParams)  # --min-daughter-ratio, described on the dataclass
    p.add_argument("--linker", choices=["pairs", "global"],
                   help="global (default): keep the pair clusterings' links and re-link the rest "
                        "over the whole movie (gap closing, two-daughter divisions); pairs: the "
                        "paper's IoU chaining of pair clusterings alone")
    p.add_argument("--scale", default=SCALE_DEFAULT, metavar="F|auto",
                   help="resize frames by this factor for cells of another size than the "
                        "model's training cells (2: cells half as wide; 0.5: twice as wide); "
                        "auto (default): estimate it from the model's cells in a few frames")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--half", action="store_true", help="half precision on GPU")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")
    p.add_argument("--overlap", action="store_true",
                   help="build each frame pair's HDBSCAN tree in a second process while the model "
                        "runs on the next frame (same result; on N CPU cores use --threads N-1)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run of the same command from its last checkpoint "
                        "(same result as an uninterrupted run)")
    p.add_argument("--checkpoint-every", type=int, default=25, metavar="N",
                   help="write a checkpoint every N frames (default 25)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_track)


# -- link -------------------------------------------------------------------------------------


def _cmd_link(args) -> int:
    import time

    import numpy as np

    from .io import read_masks, read_movie, write_ctc_result
    from .link import LinkParams, link_labels
    from .paramspec import from_args
    from .track import TrackParams, link_frames

    movie = read_movie(args.images) if args.images else None
    masks = read_masks(args.masks, movie)
    _check_output(args.output)
    start = time.perf_counter()
    frames = [np.asarray(masks[t]) for t in range(len(masks))]
    for t, f in enumerate(frames):
        if f.size and f.min() < 0:
            raise ValueError(f"{args.masks}: frame {t} has negative labels; use 0 for background")
    if args.linker == "global":
        params = from_args(LinkParams, args)
        tracked, lineage, info = link_labels(frames, params)
        print(f"cells are about {info['diameter']:.0f} pixels across and move at most "
              f"{info['max_displacement']:.1f} pixels a frame"
              + (" (learnt from the movie)" if args.max_displacement is None else ""))
    else:
        ratio = LinkParams().min_daughter_ratio if args.min_daughter_ratio is None else args.min_daughter_ratio
        tracked, lineage = link_frames(frames, TrackParams(min_track_length=1, min_daughter_ratio=ratio))
    write_ctc_result(args.output, tracked, lineage)
    kids = {}
    for _, _, _, par in lineage.tolist():
        if par:
            kids[par] = kids.get(par, 0) + 1
    print(f"wrote {args.output}: {len(lineage)} tracks, {sum(1 for v in kids.values() if v == 2)} "
          f"divisions, {sum(1 for v in kids.values() if v == 1)} gaps closed, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def _add_link(sub) -> None:
    from .link import LinkParams
    from .paramspec import add_arguments

    p = sub.add_parser(
        "link", help="track a segmentation you already have (CTC, cellpose, StarDist masks)",
        description="Link per-frame cell masks into tracks with divisions and gap closing, and "
                    "write the same CTC result folder as 'track'. MASKS is a folder of numbered "
                    "label TIFFs (a CTC RES or SEG folder, cellpose or StarDist output; ids need "
                    "not agree between frames) or a (T, Y, X) label TIFF.")
    p.add_argument("masks", metavar="MASKS", help="label TIFF folder or (T, Y, X) label TIFF")
    p.add_argument("-o", "--output", required=True, metavar="RES_DIR", help="CTC result folder to write")
    p.add_argument("--images", metavar="MOVIE", help="the movie the masks were made from (checked to fit)")
    p.add_argument("--linker", choices=["global", "iou"], default="global",
                   help="global (default): linear assignment over the whole movie (laptrack) with "
                        "gap closing and divisions; iou: frame-to-frame IoU chaining")
    add_arguments(p, LinkParams)
    p.set_defaults(func=_cmd_link)


# -- batch ------------------------------------------------------------------------------------


def _cmd_batch(args) -> int:
    from .batch import ClusterSpec, track_batch
    from .cluster import ClusterParams
    from .paramspec import given

    spec = None
    if args.cluster:
        spec = ClusterSpec(args.cluster, cores=args.cores, memory=args.memory,
                           walltime=args.walltime, queue=args.queue, jobs=args.jobs)
        if args.dry_run:
            print(f"# {args.jobs} job(s) like this one; the scheduler address is filled in when "
                  "the batch starts")
            print(spec.job_script())
            return 0
    elif args.dry_run:
        raise ValueError("--dry-run prints a cluster's job script: give --cluster slurm, pbs, sge "
                         "or lsf")

    changes = given(ClusterParams, args)

    def show(item):
        if item.status == "done":
            print(f"done     {item.movie} -> {item.output}: {item.tracks} tracks, "
                  f"resized by {item.details.get('scale', 1.0):.2f}, "
                  f"{item.seconds / max(item.frames, 1):.2f} s/frame", flush=True)
        elif item.status == "skipped":
            print(f"skipped  {item.movie}: {item.output} already exists", flush=True)
        else:
            print(f"FAILED   {item.movie}: {item.error}", flush=True)

    items = track_batch(args.movies, args.output, args.model, scheduler=args.scheduler,
                        workers=args.workers, threads=args.threads, device=args.device,
                        cluster_changes=changes or None, progress=None if args.quiet else show,
                        scale=args.scale, cluster=spec, channel=args.channel)
    counts = {s: sum(it.status == s for it in items) for s in ("done", "skipped", "failed")}
    print(f"{counts['done']} tracked, {counts['skipped']} already done, {counts['failed']} failed"
          f" -> {args.output}")
    if counts["failed"]:
        for it in items:
            if it.status == "failed":
                print(f"failed: {it.movie}: {it.error}", file=sys.stderr)
        return 1
    return 0


def _add_batch(sub) -> None:
    p = sub.add_parser(
        "batch", help="track many movies in parallel (dask.distributed) into OUT_DIR/<name>_RES",
        description="Track every MOVIE on dask.distributed: a local cluster by default, or the "
                    "running scheduler at --scheduler (e.g. workers started on a SLURM/PBS "
                    "cluster). Each result folder OUT_DIR/<movie name>_RES is written "
                    "atomically; movies whose result exists are skipped, so a rerun finishes "
                    "what is missing. A failed movie is reported (exit status 1) and the "
                    "others finish. Needs: pip install 'napari-cosine-tracker[batch]'.")
    p.add_argument("movies", nargs="+", metavar="MOVIE",
                   help="CTC image folder, folder of numbered TIFFs or (T, Y, X) TIFF")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the result folders")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads per movie (default: cores / tasks)")
    _add_model_arg(p, " (a folder must be readable by every worker)")
    _add_channel_arg(p)
    _add_cluster_args(p)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto, on the workers")
    p.add_argument("--scale", default=SCALE_DEFAULT, metavar="F|auto",
                   help="resize frames by this factor for cells of another size, or auto "
                        "(default): estimated per movie (see track)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--cluster", choices=["slurm", "pbs", "sge", "lsf", "local"],
                   help="start the workers as jobs of this queue (dask-jobqueue), or as local "
                        "processes with the same settings")
    p.add_argument("--cores", type=int, default=2, metavar="N", help="cores per job (default 2)")
    p.add_argument("--memory", default="8GB", help="memory per job (default 8GB)")
    p.add_argument("--walltime", default="02:00:00", help="time limit per job (default 02:00:00)")
    p.add_argument("--queue", metavar="Q", help="queue or partition to submit to")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="jobs to start (default 1)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the job script of --cluster and exit, submitting nothing")
    p.set_defaults(func=_cmd_batch)


# -- tune -------------------------------------------------------------------------------------


def _cmd_tune(args) -> int:
    from .tune import tune_clustering

    result = tune_clustering(args.model, args.data, holdout=args.holdout, window=args.window, device=args.device,
                             rounds=args.rounds)
    print(f"best (score {result['score']:.3f}): {result['best']}")
    print(f"written to {args.model}/config.json")
    return 0


def _add_tune(sub) -> None:
    p = sub.add_parser(
        "tune", help="choose a model's clustering defaults on annotated training frames",
        description="Coordinate descent over the clustering parameters, scored with SEG, DET and "
                    "TRA on the last --window training frames of each CTC sequence (before the "
                    "held-out ones); the best go into MODEL_DIR/config.json.")
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("data", nargs="+", metavar="DATA", help="CTC image folders (ground truth in *_GT)")
    p.add_argument("--holdout", type=float, default=0.25, help="fraction of last frames held out (as in training)")
    p.add_argument("--window", type=int, default=12, help="training frames per sequence to score on")
    p.add_argument("--rounds", type=int, default=1, help="passes of the coordinate descent over the grid")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_tune)


#: Parser blocks, in the order shown by ``--help``. Add a subcommand by appending here.
COMMANDS = [_add_models, _add_train, _add_tune, _add_track, _add_link, _add_evaluate, _add_validate, _add_export,
            _add_convert, _add_plot,
            _add_batch]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-cosine-tracker",
        description="Segment and track cells in 2D time-lapse microscopy (cosine embeddings, "
                    "Payer et al. 2018); Cell Tracking Challenge folders in and out.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _os_hint(e: BaseException) -> str:
    """What to do about a write that the system refused (outputs are written atomically)."""
    import errno

    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the location is read-only"}.get(getattr(e, "errno", None))
    if what is None:
        return ""
    return (f" ({what}: free space or choose another output location; an existing output "
            "was left unchanged)")


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 check failed, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:  # MovieError, MetricsError, missing files ...
        print(f"error: {e}{_os_hint(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m napari_cosine_tracker.core.cli
    sys.exit(main())

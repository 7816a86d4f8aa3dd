"""Track many movies (positions, wells, sequences) in parallel on dask.distributed.

Each movie is one task: read it, run :func:`~napari_cosine_tracker.core.pipeline.track_movie`
with its frames kept on disk (flat memory), and write the CTC result folder
``OUT_DIR/<movie name>_RES`` atomically (:func:`~napari_cosine_tracker.core.io.write_ctc_result`
builds it beside and renames it into place). Hence:

* a movie whose folder already holds ``res_track.txt`` is finished and skipped on a rerun;
* a failing movie (unreadable file, bad frames, a worker that dies) is reported with its error
  while the others go on; nothing half-written is ever left under its name;
* the work runs wherever dask runs: a :class:`distributed.LocalCluster` on this machine by
  default, an existing scheduler by address, or an HPC queue through ``dask-jobqueue``
  (pass its client; see ``docs/benchmarks.md``).

``distributed`` is an optional dependency: ``pip install "napari-cosine-tracker[batch]"``.

Examples
--------
>>> from napari_cosine_tracker.core.batch import track_batch        # doctest: +SKIP
>>> report = track_batch(["pos1.tif", "pos2.tif"], "results")         # doctest: +SKIP
>>> [(r.name, r.status) for r in report]                              # doctest: +SKIP
[('pos1', 'done'), ('pos2', 'done')]
"""

from __future__ import annotations

import os
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["BatchItem", "movie_name", "result_dir", "is_finished", "track_one", "track_batch"]

_TIFF_SUFFIX = re.compile(r"(\.ome)?\.tiff?$", re.IGNORECASE)


@dataclass
class BatchItem:
    """What happened to one movie of a batch.

    ``status`` is ``"done"`` (tracked now), ``"skipped"`` (its result already existed) or
    ``"failed"`` (``error`` says why; nothing was written under ``output``).
    """

    movie: str
    name: str
    output: str
    status: str = "pending"
    error: str | None = None
    frames: int | None = None
    tracks: int | None = None
    seconds: float | None = None
    details: dict = field(default_factory=dict)


def movie_name(movie) -> str:
    """The name a movie's result folder is called after: the file name without its TIFF
    extension, or the folder name (a CTC sequence ``.../01`` gives ``01``)."""
    return _TIFF_SUFFIX.sub("", Path(movie).name) or Path(movie).name


def result_dir(out_dir, movie) -> Path:
    """``out_dir/<movie name>_RES``."""
    return Path(out_dir) / f"{movie_name(movie)}_RES"


def is_finished(res_dir) -> bool:
    """A result folder is complete once ``res_track.txt`` is in it: folders are written
    beside and renamed into place whole, so a visible one is never half-written."""
    return (Path(res_dir) / "res_track.txt").is_file()


def _worker_threads() -> int:
    """Torch threads for one task: the cores of this machine shared among the tasks its dask
    worker runs at once (more threads than cores spin-wait and run far slower)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        from distributed import get_worker

        concurrent = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        concurrent = 1
    return max(1, cores // concurrent)


def track_one(movie, output, model_dir=None, device="cpu", threads: int | None = None,
              cluster_changes: dict | None = None, scale: float | str = 1.0,
              channel: int | None = None) -> dict:
    """Track one movie into the CTC result folder ``output`` (written atomically).

    Runs inside a dask worker (or anywhere). Returns a summary dict; raises on failure.
    """
    from dataclasses import replace

    import torch

    from .cellsize import stream_at_scale
    from .io import read_movie, write_ctc_result
    from .pipeline import default_params, track_movie

    torch.set_num_threads(int(threads) if threads else _worker_threads())
    start = time.perf_counter()
    movie = read_movie(movie, channel=channel)
    if model_dir in (None, "auto"):  # by the movie: fluorescence or label-free
        from .zoo import choose_model

        model_dir = choose_model(movie)[0]
    stream, _ = stream_at_scale(movie, scale, model_dir, device=device)
    params, track_params = default_params(stream.config)
    if cluster_changes:
        params = replace(params, **cluster_changes)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Tracked frames and checkpoints go to disk beside the output (same file system, removed
    # once the result is written): a rerun of a killed batch continues the movie it was on.
    from .resume import CHECKPOINT, partial_dir

    partial = partial_dir(output)
    run = dict(params=params, track_params=track_params, stream=stream,
               store_dir=partial / "frames", checkpoint_dir=partial, resume=True)
    try:
        result = track_movie(movie, **run)
    except ValueError as e:
        if not (partial / CHECKPOINT).exists() or "checkpoint" not in str(e):
            raise
        # A checkpoint of other settings or a damaged one: this movie starts over.
        shutil.rmtree(partial)
        result = track_movie(movie, **run)
    write_ctc_result(output, result.labels, result.lineage)
    shutil.rmtree(partial, ignore_errors=True)
    return {
        "frames": len(movie),
        "tracks": int(len(result.lineage)),
        "seconds": time.perf_counter() - start,
        "timings": result.timings,
        "torch_threads": torch.get_num_threads(),
        "scale": stream.scale,
    }


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if str(exc) else "".join(traceback.format_exception_only(type(exc), exc)).strip()


#: Where ``batch --cluster`` can start workers: HPC queues through dask-jobqueue, or this
#: machine (the same code path, for trying a set-up before queueing it).
CLUSTERS = ("slurm", "pbs", "sge", "lsf", "local")


@dataclass
class ClusterSpec:
    """Workers to start for a batch: ``jobs`` jobs of ``cores`` cores and ``memory`` each."""

    kind: str
    cores: int = 2
    memory: str = "8GB"
    walltime: str = "02:00:00"
    queue: str | None = None
    jobs: int = 1

    def __post_init__(self):
        if self.kind not in CLUSTERS:
            raise ValueError(f"cluster must be one of {', '.join(CLUSTERS)}, got {self.kind!r}")
        for name in ("cores", "jobs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")

    def _jobqueue_class(self):
        try:
            import dask_jobqueue
        except ImportError:
            raise ImportError("batch --cluster needs dask-jobqueue: pip install "
                              "'napari-cosine-tracker[batch]' (or pip install dask-jobqueue)") from None
        return getattr(dask_jobqueue, {"slurm": "SLURMCluster", "pbs": "PBSCluster",
                                       "sge": "SGECluster", "lsf": "LSFCluster"}[self.kind])

    def _options(self) -> dict:
        # One single-threaded worker process per core, each tracking one movie at a time on
        # its core: as the local cluster does, and movies are many while a movie is serial.
        return dict(cores=int(self.cores), memory=self.memory, walltime=self.walltime,
                    queue=self.queue, processes=int(self.cores))

    def job_script(self, scheduler: str = "tcp://<scheduler address>:8786") -> str:
        """The job script each of the ``jobs`` jobs will run (``batch --dry-run``)."""
        if self.kind == "local":
            return (f"# local: {self.jobs * self.cores} single-core worker process(es) on this "
                    "machine, no queue\n")
        job = self._jobqueue_class().job_cls(scheduler=scheduler, name="napari-cosine-tracker",
                                             **self._options())
        return job.job_script()

    def start(self):
        """Start the cluster and ask for its jobs; returns the dask cluster (close it after)."""
        if self.kind == "local":
            return local_cluster(n_workers=int(self.jobs) * int(self.cores), processes=True)
        cluster = self._jobqueue_class()(**self._options())
        cluster.scale(jobs=int(self.jobs))
        return cluster


def local_cluster(n_workers: int, processes: bool = True):
    """A dask LocalCluster of one-thread workers on this machine. distributed writes its
    workers' settings (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, ...) into this process's
    own environment before it spawns them; they are put back once the workers have started,
    so a napari session or script that runs a batch keeps its own threads and allocator."""
    from distributed import LocalCluster

    saved = dict(os.environ)
    try:
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                            dashboard_address=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def track_batch(
    movies: Sequence,
    out_dir,
    model_dir=None,
    *,
    scheduler: str | None = None,
    client=None,
    workers: int | None = None,
    threads: int | None = None,
    processes: bool = True,
    device: str = "cpu",
    cluster_changes: dict | None = None,
    progress: Callable[[BatchItem], None] | None = None,
    scale: float | str = 1.0,
    cluster: ClusterSpec | None = None,
    channel: int | None = None,
) -> list[BatchItem]:
    """Track every movie into ``out_dir/<movie name>_RES`` on dask.distributed.

    Parameters
    ----------
    movies : sequence of paths
        Movies as :func:`~napari_cosine_tracker.core.io.read_movie` reads them (CTC image
        folder, folder of numbered TIFFs, a (T, Y, X) or (T, C, Y, X) TIFF, a microscope
        file). Names must be distinct.
    channel : int, optional
        The channel to track in multichannel movies (the same in every movie).
    out_dir : path
        Where the result folders go (created).
    model_dir : path, optional
        Model folder, readable by every worker (default: the shipped model).
    scheduler : str, optional
        Address of a running dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
    client : distributed.Client, optional
        An existing client (e.g. of a ``dask_jobqueue.SLURMCluster``); wins over
        ``scheduler``. It is left open.
    cluster : ClusterSpec, optional
        Start workers there (SLURM, PBS, SGE or LSF jobs through dask-jobqueue, or local
        processes), and close them when done; wins over ``scheduler``.
    workers : int, optional
        Local cluster only: worker processes (default: one per core, at most one per movie).
    threads : int, optional
        Torch threads per movie (default: the worker machine's cores over its concurrent tasks).
    processes : bool
        Local cluster only: workers are processes (True) or threads of this process.
    device : str
        ``cpu``, ``cuda``, ``mps`` or ``auto``, on the workers.
    cluster_changes : dict, optional
        :class:`~napari_cosine_tracker.core.cluster.ClusterParams` fields to change from the
        model's defaults, e.g. ``{"min_samples": 10}``.
    progress : callable, optional
        Called with each :class:`BatchItem` as soon as it is finished, skipped or failed.
    scale : float or "auto"
        Resize frames by this factor for cells of another size than the training nuclei
        (see :class:`~napari_cosine_tracker.core.inference.EmbeddingStream`); ``"auto"``
        estimates it for each movie (:func:`~napari_cosine_tracker.core.cellsize.estimate_scale`).

    Returns
    -------
    list of BatchItem
        In the order of ``movies``.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ImportError(
            "batch tracking needs dask.distributed: pip install 'napari-cosine-tracker[batch]' "
            "(or pip install distributed)") from None
    from .cellsize import parse_scale
    from .devices import keep_freed_memory

    scale = parse_scale(scale)  # before any work: a bad value would fail every movie
    if cluster_changes:
        from dataclasses import fields

        from .cluster import ClusterParams

        unknown = set(cluster_changes) - {f.name for f in fields(ClusterParams)}
        if unknown:
            raise ValueError(f"unknown clustering parameter(s) {sorted(unknown)}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    movies = [str(m) for m in movies]
    if not movies:
        raise ValueError("no movies given")
    out_dir = Path(out_dir)
    items = [BatchItem(movie=m, name=movie_name(m), output=str(result_dir(out_dir, m))) for m in movies]
    seen: dict[str, str] = {}
    for it in items:
        if it.name in seen:
            raise ValueError(
                f"movies {seen[it.name]} and {it.movie} would both be written to {it.output}; "
                "track movies with the same name into different output folders")
        seen[it.name] = it.movie
    out_dir.mkdir(parents=True, exist_ok=True)

    def report(it):
        if progress is not None:
            progress(it)

    todo = []
    for it in items:
        if is_finished(it.output):
            it.status = "skipped"
            report(it)
        elif not Path(it.movie).exists():
            it.status, it.error = "failed", f"{it.movie} does not exist"
            report(it)
        else:
            todo.append(it)
    if not todo:
        return items

    own = []  # what we started, closed at the end
    try:
        if client is None:
            if cluster is not None:
                started = cluster.start()
                own.append(started)
                client = Client(started)
                if threads is None:
                    threads = 1  # one core per worker process (see ClusterSpec._options)
            elif scheduler:
                client = Client(scheduler)
            else:
                try:
                    cores = len(os.sched_getaffinity(0))
                except AttributeError:
                    cores = os.cpu_count() or 1
                n = workers or max(1, min(cores, len(todo)))
                cluster = local_cluster(n_workers=n, processes=processes)
                own.append(cluster)
                client = Client(cluster)
                # Before the workers start the threads that run the movies (docs/benchmarks.md).
                client.run(keep_freed_memory)
                if threads is None:
                    threads = max(1, cores // n)
            own.insert(0, client)
        futures = {}
        for it in todo:
            fut = client.submit(track_one, it.movie, it.output, None if model_dir is None else str(model_dir),
                                device, threads, cluster_changes, scale, channel, pure=False,
                                key=f"track-{it.name}-{os.getpid()}-{time.time_ns()}")
            futures[fut] = it
        for fut in as_completed(futures):
            it = futures[fut]
            try:
                info = fut.result()
            except Exception as exc:  # noqa: BLE001 -- report it, let the others finish
                it.status, it.error = "failed", _error_text(exc)
            else:
                it.status = "done"
                it.frames, it.tracks, it.seconds = info["frames"], info["tracks"], info["seconds"]
                it.details = {k: info[k] for k in ("timings", "torch_threads", "scale")}
            fut.release()
            report(it)
    finally:
        for obj in own:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 -- closing must not hide the results
                pass
    return items

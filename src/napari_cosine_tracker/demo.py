"""Demo: a synthetic movie, written and scored as a Cell Tracking Challenge sequence.

Run with ``python -m napari_cosine_tracker.demo`` (or ``make demo``). It makes the seeded
synthetic movie, writes its images (``01/``), its ground truth (``01_GT/``) and -- as a stand-in
result -- the ground-truth tracking as a CTC result (``01_RES/``) under ``out/demo/``, checks the
result with py-ctcmetrics' validity test and prints the official measures (all 1.0 for the
truth). Needs no display.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .core.io import write_ctc_gt, write_ctc_result, write_movie_folder
from .core.metrics import evaluate, format_table, validate
from .core.synthetic import make_synthetic_movie


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_cosine_tracker.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic movie")
    args = parser.parse_args(argv)

    out = Path(args.out)
    t0 = time.perf_counter()
    movie = make_synthetic_movie(seed=args.seed)
    T, Y, X = movie.shape
    print(f"synthetic movie: {T} frames of {Y}x{X}, {len(movie.lineage)} tracks, "
          f"{movie.n_divisions} divisions")
    write_movie_folder(out / "01", movie.images)
    write_ctc_gt(out / "01_GT", movie.labels, movie.lineage)
    res = write_ctc_result(out / "01_RES", movie.labels, movie.lineage)
    print(f"wrote {out / '01'}, {out / '01_GT'}, {res}")

    problems = validate(res)
    if problems:
        print("result is not valid CTC:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("ctc validity check: ok")
    scores = evaluate(res, out / "01_GT")
    print(format_table(scores))
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

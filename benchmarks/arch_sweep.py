"""How close each candidate architecture gets to the machine's convolution throughput.

    python benchmarks/arch_sweep.py [--sizes 128 256 512] [--rounds 3] [--threads N]

Times the network alone (random weights, recurrent state carried, channels-last, freed memory
kept as in :class:`EmbeddingStream`) of the shipped architecture (4x4 blocks), the one
shipped before it (full pixels) and other coarser-pixel
variants (``space_to_depth``) on square model inputs, in turns with the 3x3 64->64
convolution reference of ``run.py``, and prints each one's GFLOP per frame, ms per frame
(median) and fraction of the reference measured in the same round. The weights do not change
the time, so this says which architecture is worth training for speed before any GPU time
is spent on it. Model input = movie frame x pixel scale (0.5 for the shipped model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PREVIOUS_ARCH, conv_reference, count_flops, machine_info  # noqa: E402

from napari_cosine_tracker.core.devices import keep_freed_memory  # noqa: E402
from napari_cosine_tracker.core.model import ModelConfig, RecurrentHourglass  # noqa: E402

ARCHS = {
    "previous shipped (32 filters, 5 levels)": PREVIOUS_ARCH,
    "2x2 blocks, 64 filters, 4 levels": dict(PREVIOUS_ARCH, filters=64, levels=4, space_to_depth=2),
    "2x2 blocks, 48 filters, 4 levels": dict(PREVIOUS_ARCH, filters=48, levels=4, space_to_depth=2),
    "4x4 blocks, 128 filters, 3 levels (shipped)": dict(PREVIOUS_ARCH, filters=128, levels=3, space_to_depth=4),
    "4x4 blocks, 96 filters, 3 levels": dict(PREVIOUS_ARCH, filters=96, levels=3, space_to_depth=4),
}


def time_network(net: RecurrentHourglass, size: int, frames: int) -> float:
    """Median ms per frame of ``net`` on a ``size``² input, after a zero-state and a first frame."""
    x = torch.rand(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        _, state = net(x)
        _, state = net(x, state)
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            _, state = net(x, state)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="model input sizes")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every architecture in turn")
    ap.add_argument("--frames", type=int, default=5, help="timed frames per architecture and round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.manual_seed(0)
    nets = {name: RecurrentHourglass(ModelConfig(**arch)).eval().to(memory_format=torch.channels_last)
            for name, arch in ARCHS.items()}
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    result = {"machine": info, "sizes": {}}
    for size in args.sizes:
        gflop = {name: count_flops(net.config, [(size, size)]) / 1e9 for name, net in nets.items()}
        rounds = []
        for _ in range(args.rounds):
            ref = conv_reference(6)[256]["gflops"]
            ms = {name: time_network(net, size, args.frames) for name, net in nets.items()}
            rounds.append({"reference_gflops": ref, "ms": ms,
                           "fraction": {n: gflop[n] / ms[n] * 1000 / ref for n in nets}})
        result["sizes"][size] = {"gflop": gflop, "rounds": rounds}
        print(f"\nmodel input {size}x{size} (movie frame {2 * size}² at pixel scale 0.5); "
              "reference " + ", ".join(f"{r['reference_gflops']:.0f}" for r in rounds) + " GFLOP/s by round")
        print("| architecture | GFLOP/frame | ms/frame by round | of the reference by round |")
        print("|---|---|---|---|")
        for name in nets:
            ms = " / ".join(f"{r['ms'][name]:.0f}" for r in rounds)
            fractions = " / ".join(f"{r['fraction'][name]:.2f}" for r in rounds)
            print(f"| {name} | {gflop[name]:.1f} | {ms} | {fractions} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

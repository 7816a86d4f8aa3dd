"""The model on a CUDA GPU: speed beside the CPU, and agreement with the CPU's embeddings.

    python benchmarks/gpu_check.py [--model DIR] [--frames CTC_IMAGE_DIR] [--json OUT]

* **speed**: ms per movie frame through :class:`EmbeddingStream` (normalisation, rescaling,
  the recurrent model, the copy back to the host: what ``track`` pays per frame) at 256²,
  512² and 1024², in float32 and in half precision (``--half``), and the model's GFLOP/s.
* **network alone**: ms of the network's forward pass on an input already on the device,
  state carried (the rest of a frame's time is host work: normalising and rescaling the frame,
  copying the embeddings back).
* **agreement**: the same real frames through the CPU and the GPU stream (state carried), in
  float32 and half: largest cosine distance between the two embeddings of a pixel, and the
  fraction of pixels whose foreground call (``embedding[0] < threshold``) differs.

Needs only torch, numpy, scipy, tifffile and safetensors (no clustering libraries), so it
runs on a bare GPU machine with ``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _frames, bench_model, machine_info  # noqa: E402

from napari_cosine_tracker.core.inference import EmbeddingStream  # noqa: E402
from napari_cosine_tracker.core.model import default_model_dir, read_model_config  # noqa: E402
from napari_cosine_tracker.core.pipeline import default_params  # noqa: E402


def conv_reference_cuda(repeat: int = 50) -> float:
    """GFLOP/s of a 3x3 64->64 convolution on a batch of 8 256² inputs (cuDNN, float32)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).cuda().eval()
    x = torch.randn(8, 64, 256, 256, device="cuda")
    flops = 8 * 2 * 64 * 64 * 9 * 256 * 256
    with torch.inference_mode():
        for _ in range(5):
            conv(x)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            conv(x)
        end.record()
        torch.cuda.synchronize()
    return flops * repeat / (start.elapsed_time(end) / 1e3) / 1e9


def network_ms(model_dir: Path, sizes, repeat: int = 20, device: str = "cuda") -> dict:
    """Median ms of the network alone per movie frame size (its model input already on the
    device, channels-last, state carried), as ``EmbeddingStream`` runs it."""
    stream = EmbeddingStream(model_dir, device=device)
    sync = torch.cuda.synchronize if stream.device.type == "cuda" else (lambda: None)
    out = {}
    for size in sizes:
        x = torch.from_numpy(stream.prepare(_frames(size, 1, seed=size)[0]))[None, None]
        x = x.to(stream.device).contiguous(memory_format=stream.memory_format)
        ts, state = [], None
        with torch.inference_mode():
            for k in range(repeat + 2):
                sync()
                t0 = time.perf_counter()
                _, state = stream.model(x, state)
                sync()
                if k >= 2:  # the zero state and the first allocations
                    ts.append(time.perf_counter() - t0)
        out[size] = statistics.median(ts) * 1e3
    return out


def agreement(model_dir: Path, frames: list[np.ndarray], half: bool, threshold: float,
              device: str = "cuda") -> dict:
    """Embeddings of ``frames`` on the CPU against ``device`` (state carried)."""
    cpu = EmbeddingStream(model_dir, device="cpu")
    gpu = EmbeddingStream(model_dir, device=device, half=half)
    worst, flips, total = 0.0, 0, 0
    for f in frames:
        a, b = cpu.push(f), gpu.push(f)
        cos = np.sum(a * b, axis=0)
        worst = max(worst, float(1.0 - cos.min()))
        flips += int(np.sum((a[0] < threshold) != (b[0] < threshold)))
        total += a[0].size
    return {"max_cosine_distance": worst, "foreground_flip_fraction": flips / total, "frames": len(frames)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", metavar="DIR", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--frames", metavar="DIR", default=None, help="CTC image folder for the agreement check")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check", file=sys.stderr)
        return 2
    model_dir = Path(args.model) if args.model else default_model_dir()
    threshold = default_params(read_model_config(model_dir))[0].fg_threshold
    r = {"machine": machine_info(), "cuda_device": torch.cuda.get_device_name(0), "model": str(model_dir)}
    t0 = time.perf_counter()
    sizes = (256, 512, 1024)
    r["conv_reference_gflops_cuda"] = conv_reference_cuda()
    r["cpu"] = bench_model(model_dir, sizes[:2], 3, "cpu")
    r["cuda_fp32"] = bench_model(model_dir, sizes, 20, "cuda")
    r["cuda_half"] = bench_model(model_dir, sizes, 20, "cuda", half=True)
    r["cuda_network_ms"] = network_ms(model_dir, sizes)
    if args.frames:
        import tifffile

        paths = sorted(Path(args.frames).glob("t*.tif"))[:6]
        frames = [tifffile.imread(p) for p in paths]
    else:
        frames = list(_frames(512, 6, seed=3))
    r["agreement_fp32"] = agreement(model_dir, frames, False, threshold)
    r["agreement_half"] = agreement(model_dir, frames, True, threshold)
    r["wall_s"] = time.perf_counter() - t0
    print(f"GPU: {r['cuda_device']}   CPU: {r['machine']['cpu']} ({r['machine']['cores']} cores)   "
          f"torch {torch.__version__}")
    print(f"cuDNN 3x3 64->64 conv reference: {r['conv_reference_gflops_cuda']:.0f} GFLOP/s")
    print(f"{'size':>6} {'CPU ms':>9} {'CUDA fp32 ms':>13} {'CUDA half ms':>13} {'fp32 GFLOP/s':>13} "
          f"{'network alone ms':>17}")
    for s in sizes:
        c = r["cpu"].get(s, {}).get("ms")
        print(f"{s:>6} {c if c is None else round(c, 1)!s:>9} {r['cuda_fp32'][s]['ms']:>13.2f} "
              f"{r['cuda_half'][s]['ms']:>13.2f} {r['cuda_fp32'][s]['gflops_per_s']:>13.0f} "
              f"{r['cuda_network_ms'][s]:>17.2f}")
    for k in ("agreement_fp32", "agreement_half"):
        a = r[k]
        print(f"{k}: max cosine distance {a['max_cosine_distance']:.2e}, "
              f"foreground calls differing {a['foreground_flip_fraction']:.2e} ({a['frames']} frames)")
    text = json.dumps(r, indent=2, default=lambda o: sorted(o) if isinstance(o, set) else float(o))
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

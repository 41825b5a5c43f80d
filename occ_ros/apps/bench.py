"""`occ-ros bench`: per-stage latency, frames per second and peak memory of one model on one backend.

    occ-ros bench --backend torch --model lite --frames 20
    occ-ros bench --backend onnxruntime --model pano-tiny --threads 2 --json
    occ-ros bench --backend tensorrt --model pano-tiny --precision fp16 --frames 200

Each frame is the deployed path on synthetic input: six 900×1600 RGB images (seeded noise over
gradients) on the nuScenes rig → preprocess (`ImagePreprocessor`) → network → post-processing
(`PanopticPostprocessor`: labels + centres → semantic and instance grids). The torch backend
times the network stage by stage (image encoder, depth net, BEV pool, BEV encoder, heads, the
argmax/score tail); ONNX Runtime and TensorRT run the exported graph as one `engine` stage.
Every stage is reported as median and p90 over `--frames` frames after `--warmup` frames; `total`
is the wall time of a whole frame. CUDA stages are synchronised before each clock read. Weights
are random unless `--checkpoint` is given: latency does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import numpy as np
import torch

from occ_ros.backends import io_spec as ios
from occ_ros.core.config import PRECISIONS
from occ_ros.core.errors import ConfigError

LOG = logging.getLogger('occ_ros.apps.bench')

BACKENDS = ('torch', 'onnxruntime', 'tensorrt')
HEAVY_FRAMES = 10          # default --frames for ResNet-50 models
# the stages that are the network (torch backend) or the whole engine (onnxruntime / tensorrt)
NETWORK_STAGES = ('image_encoder', 'depth_net', 'bev_pool', 'bev_encoder', 'heads', 'labels', 'engine')
LIGHT_FRAMES = 30          # default --frames for lighter models
T = TypeVar('T')


@dataclass
class StageTimer:
    """Collects per-stage wall times (ms); synchronises CUDA before each clock read."""

    device: torch.device
    times: dict[str, list[float]] = field(default_factory=dict)
    enabled: bool = True

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def __call__(self, stage: str, fn: Callable[[], T]) -> T:
        self._sync()
        t0 = time.perf_counter()
        out = fn()
        self._sync()
        if self.enabled:
            self.times.setdefault(stage, []).append((time.perf_counter() - t0) * 1e3)
        return out


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def synthetic_images(rig_hw: list[tuple[int, int]], seed: int) -> list[np.ndarray]:
    """One (H, W, 3) uint8 RGB image per camera: a colour gradient with seeded noise."""
    rng = np.random.default_rng(seed)
    images = []
    for i, (h, w) in enumerate(rig_hw):
        yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        xx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        base = 255 * (0.3 * yy + 0.3 * xx + 0.4 * np.array([i / 6, 0.5, 1 - i / 6], np.float32))
        noise = rng.normal(0, 25, size=(h, w, 3)).astype(np.float32)
        images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return images


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if platform.system() == 'Darwin' else 2**10)


def _build_model(name: str, checkpoint: Optional[Path]) -> torch.nn.Module:
    from occ_ros.model.loading import load_model

    return load_model(name, checkpoint, lambda line: LOG.info('%s', line))


def run_benchmark(model_name: str = 'lite', backend: str = 'torch', precision: str = 'fp32', *,
                  frames: Optional[int] = None, warmup: int = 2, threads: Optional[int] = None,
                  device: Optional[str] = None, checkpoint: Optional[Path] = None,
                  onnx_path: Optional[Path] = None, engine_dir: Optional[Path] = None,
                  autocast_bf16: bool = False, seed: int = 0) -> dict[str, Any]:
    """Benchmark and return the report dict (what `--json` prints); torch's thread count is
    restored afterwards."""
    if backend not in BACKENDS:
        raise ConfigError(f'--backend must be one of {BACKENDS}, got {backend!r}')
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(model_name, backend, precision, frames, warmup, threads, device, checkpoint,
                    onnx_path, engine_dir, autocast_bf16, seed)
    finally:
        torch.set_num_threads(prev_threads)


def _run(model_name: str, backend: str, precision: str, frames: Optional[int], warmup: int,
         threads: Optional[int], device: Optional[str], checkpoint: Optional[Path],
         onnx_path: Optional[Path], engine_dir: Optional[Path], autocast_bf16: bool,
         seed: int) -> dict[str, Any]:
    from occ_ros.backends.factory import create_backend
    from occ_ros.backends.deploy import DeployModule, float32_softmax
    from occ_ros.geometry import compute_bev_geometry, nuscenes_rig
    from occ_ros.preprocess import ImagePreprocessor

    torch.manual_seed(seed)                    # same random weights → same centres → same post-processing work
    model = _build_model(model_name, checkpoint)
    cfg = model.cfg
    if frames is None:
        frames = HEAVY_FRAMES if cfg.backbone_depth >= 50 else LIGHT_FRAMES
    if frames < 1 or warmup < 0:
        raise ConfigError('--frames must be >= 1 and --warmup >= 0')
    dev = torch.device(device or ('cuda' if backend == 'tensorrt' else 'cpu'))

    rig = nuscenes_rig()
    geometry = compute_bev_geometry(cfg, rig, fast_path=False).to(dev)
    images = synthetic_images([c.image_hw for c in rig], seed)
    pre = ImagePreprocessor(cfg.image, device=dev, workers=threads)
    post = _postprocessor(cfg)
    static: dict[str, torch.Tensor] = {ios.CAM_VEC: geometry.cam_vec.float()}
    pool = geometry.pool_index.tensors()
    static[ios.POOL_DEPTH_IDX], static[ios.POOL_FEAT_IDX], static[ios.POOL_CELL_ROW] = pool
    if cfg.num_frames > 1:
        ny, nx = cfg.grid.bev_shape
        static[ios.BEV_HISTORY] = torch.zeros(1, cfg.history_channels, ny, nx, device=dev)
        static[ios.HISTORY_VALID] = torch.ones(cfg.num_frames - 1, device=dev)

    timer = StageTimer(dev)
    engine = None
    if backend == 'torch':
        deploy = DeployModule(model.to(dev), precision, 'warp').eval()   # the staged timing feeds a BEV history
        net = deploy.model
        dt = deploy.compute_dtype
    else:
        engine = create_backend(backend, model=model, onnx_path=onnx_path, device=str(dev),
                                precision=precision, threads=threads, engine_dir=engine_dir,
                                temporal_mode='warp')
    amp = torch.autocast('cpu', dtype=torch.bfloat16) if autocast_bf16 else nullcontext()

    def torch_network(img: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), amp, float32_softmax(dt != torch.float32):
            feats = timer('image_encoder', lambda: net.encode_images(img.to(dt)))
            depth, ctx = timer('depth_net', lambda: net.predict_depth(feats, static[ios.CAM_VEC]))
            bev = timer('bev_pool', lambda: net.pool(depth, ctx, static[ios.POOL_DEPTH_IDX],
                                                     static[ios.POOL_FEAT_IDX], static[ios.POOL_CELL_ROW]))
            hist = (static[ios.BEV_HISTORY].to(dt), static[ios.HISTORY_VALID]) if cfg.num_frames > 1 else ()
            enc = timer('bev_encoder', lambda: net.encode_bev(net.pre_process(bev), *hist))
            heads = timer('heads', lambda: net.heads(enc))

            def tail() -> dict[str, torch.Tensor]:
                logits = heads['occ_logits'].float()
                out = {ios.OCC_LABEL: logits.argmax(-1).to(ios.LABEL_DTYPE)}
                out.update({k: heads[k].float() for k in (ios.HEATMAP, ios.REG, ios.HEIGHT) if k in heads})
                return out
            return timer('labels', tail)

    def frame() -> None:
        img = timer('preprocess', lambda: pre.batch(images).unsqueeze(0))     # (1, N, 3, H, W)
        if engine is None:
            out = torch_network(img)
        else:
            out = timer('engine', lambda: engine.infer({**static, ios.IMG: img}))
        if post is not None:
            timer('postprocess', lambda: post(out[ios.OCC_LABEL], out.get(ios.HEATMAP),
                                              out.get(ios.REG), out.get(ios.HEIGHT)))

    try:
        timer.enabled = False
        for _ in range(warmup):
            frame()
        timer.enabled = True
        if dev.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(frames):
            t0 = time.perf_counter()
            frame()
            if dev.type == 'cuda':
                torch.cuda.synchronize(dev)
            timer.times.setdefault('total', []).append((time.perf_counter() - t0) * 1e3)
    finally:
        pre.close()
        if engine is not None:
            engine.close()

    stages = {name: {'median_ms': round(statistics.median(v), 3), 'p90_ms': round(percentile(v, 90), 3)}
              for name, v in timer.times.items()}
    total = stages['total']['median_ms']
    # the machine's own limit, in the same run: what fraction of its fp32 matmul rate the network uses
    from occ_ros.apps.machine import matmul_gflops, memory_gbps, network_gflop
    gflop = network_gflop(DeployModule(model.to(dev).float(), 'fp32', 'warp').eval().run,
                          {**static, ios.IMG: pre.batch(images).unsqueeze(0)})
    rate = matmul_gflops(device=str(dev))
    net_ms = sum(stages[s]['median_ms'] for s in NETWORK_STAGES if s in stages)
    return {
        'model': cfg.name, 'backend': backend, 'device': str(dev), 'precision': precision,
        'bf16_autocast': autocast_bf16, 'frames': frames, 'warmup': warmup,
        'threads': torch.get_num_threads(),
        'input_hw': list(cfg.image.input_hw), 'cameras': cfg.num_cameras,
        'stages': stages, 'fps': 1000.0 / total if total > 0 else None,
        'peak_rss_mb': round(_peak_rss_mb(), 1),
        'gpu_peak_mb': round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == 'cuda' else None,
        'host': {'cpu_count': os.cpu_count(), 'machine': platform.machine(), 'torch': torch.__version__},
        'postprocess': post is not None,
        'machine': {'matmul_gflops': round(rate, 1), 'memory_gbps': round(memory_gbps(), 1)},
        'network': {'gflop_per_frame': round(gflop, 2), 'ms': round(net_ms, 3),
                    'gflops': round(gflop / (net_ms / 1e3), 1) if net_ms > 0 else None,
                    'fraction_of_matmul_rate': round(gflop / (net_ms / 1e3) / rate, 3) if net_ms > 0 else None},
    }


def _postprocessor(cfg: Any) -> Any:
    """The panoptic post-processor for `cfg`, or None if that module is not available."""
    try:
        from occ_ros.postprocess import PanopticPostprocessor, PostprocessConfig
    except ImportError as e:              # optional room: benchmark the rest
        LOG.warning('post-processing not timed: %s', e)
        return None
    return PanopticPostprocessor(PostprocessConfig(grid=cfg.grid))


def format_report(r: dict[str, Any]) -> str:
    head = (f"occ-ros bench: {r['model']} on {r['backend']} ({r['device']}, {r['precision']}"
            f"{', bf16 autocast' if r['bf16_autocast'] else ''}, {r['threads']} threads), "
            f"{r['frames']} frames after {r['warmup']} warm-up")
    lines = [head, f"{'stage':<14}{'median ms':>11}{'p90 ms':>10}"]
    for name, s in r['stages'].items():
        lines.append(f"{name:<14}{s['median_ms']:>11.1f}{s['p90_ms']:>10.1f}")
    m, n = r['machine'], r['network']
    lines.append(f"network {n['gflop_per_frame']:.1f} GFLOP/frame in {n['ms']:.1f} ms = {n['gflops']} GFLOPS, "
                 f"{100 * (n['fraction_of_matmul_rate'] or 0):.0f} % of this machine's fp32 matmul rate "
                 f"({m['matmul_gflops']:.0f} GFLOPS, memory {m['memory_gbps']:.0f} GB/s, measured in this run)")
    lines.append(f"FPS {r['fps']:.2f}   peak host RSS {r['peak_rss_mb']:.0f} MB"
                 + (f"   GPU peak {r['gpu_peak_mb']:.0f} MB" if r['gpu_peak_mb'] is not None else ''))
    return '\n'.join(lines)


# ---- CLI -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--backend', choices=BACKENDS, default='torch', help='runtime (default torch)')
    parser.add_argument('--model', default='lite', help='model name (default lite)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32')
    parser.add_argument('--frames', type=int, default=None,
                        help=f'timed frames (default {HEAVY_FRAMES} for ResNet-50 models, '
                             f'{LIGHT_FRAMES} otherwise)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed frames first (default 2)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (torch and onnxruntime)')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda[:i] (default: cuda for tensorrt, else cpu)')
    parser.add_argument('--checkpoint', type=Path, default=None, help='weights (default random)')
    parser.add_argument('--onnx', type=Path, default=None,
                        help='use this exported graph (onnxruntime/tensorrt)')
    parser.add_argument('--engine-dir', type=Path, default=None,
                        help='TensorRT engine / ONNX cache directory')
    parser.add_argument('--bf16', action='store_true', help='torch on CPU: bf16 autocast')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights and images')
    parser.add_argument('--json', action='store_true', help='print the report as JSON')


def run(args: argparse.Namespace) -> int:
    report = run_benchmark(args.model, args.backend, args.precision, frames=args.frames,
                           warmup=args.warmup, threads=args.threads, device=args.device,
                           checkpoint=args.checkpoint, onnx_path=args.onnx,
                           engine_dir=args.engine_dir, autocast_bf16=args.bf16, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else format_report(report), flush=True)
    return 0

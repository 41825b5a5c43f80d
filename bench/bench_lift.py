"""4D history: the official lift (temporal_mode 'lift') against the BEV warp ('warp'), on the CPU.

    .venv/bin/python bench/bench_lift.py                                  # pano-4d, pano-longterm8f: cost
    .venv/bin/python bench/bench_lift.py --models pano-4d --labels --seconds 4 --json out.json

Cost per output, per model and mode, median over `--repeats` runs (after one warm-up), random
weights (seeded; the cost does not depend on them):

* `history`: what the mode does before the network — warp: `TemporalBuffer.prepare` (grid_sample of
  the N stored BEV maps); lift: `lift_history_inputs` (the N history frames' pool tables against the
  current key ego, built by `FrameTableBuilder` on the CPU, and their camera vectors);
* `network`: the engine-contract module (`deploy_module`, what the torch backend runs) on the
  current frame plus the history — lift re-runs DepthNet, the pool and pre_process per history frame;
* the network's GFLOP per output (torch's flop counter) and the fp32 matmul rate measured right
  before each network run (`occ_ros.apps.machine`; this machine's speed moves with its load):
  `network at x of it` = GFLOP / network time / matmul rate. The modes run interleaved (warp, lift,
  warp, lift, …) and `lift / warp` is the median of the back-to-back pairs' ratios.

A drive at 10 m/s in a 0.3 rad/s turn with the nuScenes firing spread gives every history frame its
own per-camera poses. The current frame's own tables cost the same in both modes and are left out.

`--labels`: a synthetic drive (`SyntheticSequence`, the world of `occ-ros synth`, staggered cameras,
`--fast-forward`× speed) through `OccupancyPipeline` twice with the same random weights (no 4D
weights exist here), once per mode; prints the % of voxels whose label differs on the frames whose
history slots are all filled (and on the camera-visible voxels). Random weights make this a measure
of how far the two history inputs move the network, not of trained accuracy.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occ_ros.apps.machine import matmul_gflops, network_gflop
from occ_ros.backends import io_spec as ios
from occ_ros.backends.deploy import deploy_module
from occ_ros.core.config import NUSCENES_CAMERAS, NUSCENES_CAPTURE_OFFSETS_S, TEMPORAL_MODES
from occ_ros.geometry import compute_bev_geometry, nuscenes_rig, rigid_transform
from occ_ros.geometry.frame_tables import FrameTableBuilder
from occ_ros.geometry.lift_tables import LiftFrame, lift_history_inputs
from occ_ros.model.builders import build_from_config, model_config
from occ_ros.temporal import TemporalBuffer, TemporalConfig

SPREAD_S = tuple(NUSCENES_CAPTURE_OFFSETS_S[c] for c in NUSCENES_CAMERAS)    # view order
STAMP0_NS = 10_000_000_000


def drive(t: float, speed: float = 10.0, yaw_rate: float = 0.3) -> np.ndarray:
    yaw = yaw_rate * t
    x, y = speed / yaw_rate * math.sin(yaw), speed / yaw_rate * (1 - math.cos(yaw))
    c, s = math.cos(yaw), math.sin(yaw)
    return rigid_transform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), (x, y, 0.0))


def camera_poses(t: float) -> np.ndarray:
    return np.stack([drive(t + o) for o in SPREAD_S])


def cost(name: str, repeats: int) -> dict[str, Any]:
    """Both modes of `name`, interleaved (warp, lift, warp, lift, …) so both see the same load; the
    matmul rate is measured right before each network timing."""
    cfg = model_config(name)
    torch.manual_seed(0)
    net = build_from_config(cfg).eval()
    rig = nuscenes_rig((900, 1600))
    h = cfg.num_frames - 1
    interval = TemporalConfig().history_interval_s
    t_now = h * interval
    cur = compute_bev_geometry(cfg, rig, camera_poses(t_now))
    g = torch.Generator().manual_seed(0)
    base = {ios.IMG: torch.randn(1, cfg.num_cameras, 3, *cfg.image.input_hw, generator=g),
            ios.CAM_VEC: cur.cam_vec.float()}
    base[ios.POOL_DEPTH_IDX], base[ios.POOL_FEAT_IDX], base[ios.POOL_CELL_ROW] = cur.pool_index.tensors()
    stamp = STAMP0_NS + int(round(t_now * 1e9))
    key = camera_poses(t_now)[0]
    buf = TemporalBuffer(TemporalConfig.for_model(cfg))
    for k in range(h, 0, -1):
        t = t_now - k * interval
        buf.push(torch.randn(1, cfg.context_channels, *cfg.grid.bev_shape, generator=g),
                 STAMP0_NS + int(round(t * 1e9)), drive(t))
    builder = FrameTableBuilder(cfg, rig, fast_path=False)
    fh, fw = cfg.feature_hw
    slots = [LiftFrame(torch.randn(cfg.num_cameras, cfg.neck_out_channels, fh, fw, generator=g),
                       camera_poses(t_now - k * interval), builder) for k in range(1, h + 1)]

    def warp_history() -> dict[str, torch.Tensor]:
        hist, valid, _ = buf.prepare(stamp, key)                 # repeatable: nothing is pushed
        assert hist is not None
        return {ios.BEV_HISTORY: hist, ios.HISTORY_VALID: valid}

    def lift_history() -> dict[str, torch.Tensor]:
        lift = lift_history_inputs(cfg, slots, key, cur.sensor2keyego, torch.device('cpu'))
        assert lift.overflows == 0 and float(lift.valid.sum()) == h
        return {ios.HIST_IMG_FEAT: lift.img_feat, ios.HIST_CAM_VEC: lift.cam_vec,
                ios.HIST_POOL_DEPTH_IDX: lift.depth_idx, ios.HIST_POOL_FEAT_IDX: lift.feat_idx,
                ios.HIST_POOL_CELL_ROW: lift.cell_row, ios.HISTORY_VALID: lift.valid}

    history = {'warp': warp_history, 'lift': lift_history}
    deploy = {m: deploy_module(net, 'fp32', m).eval() for m in TEMPORAL_MODES}
    inputs = {m: {**base, **history[m]()} for m in TEMPORAL_MODES}
    gflop = {m: network_gflop(deploy[m].run, inputs[m]) for m in TEMPORAL_MODES}
    rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in TEMPORAL_MODES}
    with torch.inference_mode():
        for m in TEMPORAL_MODES:
            deploy[m].run(inputs[m])                             # warm-up
        for _ in range(repeats):
            for m in ('warp', 'lift'):
                t0 = time.perf_counter()
                history[m]()
                t1 = time.perf_counter()
                rate = matmul_gflops()
                t2 = time.perf_counter()
                deploy[m].run(inputs[m])
                t3 = time.perf_counter()
                rows[m].append(((t1 - t0) * 1e3, (t3 - t2) * 1e3, rate))
    out: dict[str, Any] = {'model': name, 'history_frames': h}
    for m in ('warp', 'lift'):
        hist_ms = statistics.median(r[0] for r in rows[m])
        net_ms = statistics.median(r[1] for r in rows[m])
        rate = statistics.median(r[2] for r in rows[m])
        frac = statistics.median(gflop[m] / (r[1] / 1e3) / r[2] for r in rows[m])
        out[m] = {'history_ms': round(hist_ms, 1), 'network_ms': round(net_ms, 1),
                  'total_ms': round(hist_ms + net_ms, 1), 'network_gflop': round(gflop[m], 1),
                  'matmul_gflops': round(rate, 1), 'of_matmul_rate': round(frac, 3),
                  'runs': [[round(v, 1) for v in r] for r in rows[m]]}
        print(f'  {name:16s} {m:4s}: history {hist_ms:8.1f} ms  network {net_ms:8.1f} ms  '
              f'total {hist_ms + net_ms:8.1f} ms  {gflop[m]:7.1f} GFLOP  matmul {rate:5.0f} GFLOPS  '
              f'network at {frac:5.1%} of it', flush=True)
    ratios = [(lw[0] + lw[1]) / (ww[0] + ww[1]) for lw, ww in zip(rows['lift'], rows['warp'])]
    out['lift_over_warp'] = round(statistics.median(ratios), 2)
    out['lift_over_warp_gflop'] = round(gflop['lift'] / gflop['warp'], 2)
    print(f'  {name:16s} lift / warp per output: {out["lift_over_warp"]:.2f}× measured (pairs run back to '
          f'back), {out["lift_over_warp_gflop"]:.2f}× in GFLOP', flush=True)
    return out


def labels(name: str, seed: int, seconds: float, rate_hz: float, fast_forward: float,
           image_hw: tuple[int, int]) -> dict[str, Any]:
    from occ_ros.backends.torch_backend import TorchBackend
    from occ_ros.bag.synth import SyntheticSequence, staggered_offsets
    from occ_ros.pipeline import OccupancyPipeline

    cfg = model_config(name)
    torch.manual_seed(0)
    net = build_from_config(cfg).eval()
    rig = nuscenes_rig(image_hw)
    seq = SyntheticSequence(seed, seconds, rate_hz, rig, image_hw, capture_offsets_s=staggered_offsets(rig),
                            time_scale=fast_forward, ground_truth=False)
    frames = [seq.frame(i).frame_set(rig) for i in range(len(seq.stamps))]
    first, last = frames[0].ego_pose, frames[-1].ego_pose
    assert first is not None and last is not None
    speed = float(np.linalg.norm(last.matrix[:3, 3] - first.matrix[:3, 3])) \
        / max((frames[-1].stamp_ns - frames[0].stamp_ns) / 1e9, 1e-9)
    runs: dict[str, list[tuple[np.ndarray, np.ndarray, bool]]] = {}
    for mode in TEMPORAL_MODES:
        pipe = OccupancyPipeline(cfg, TorchBackend(net, temporal_mode=mode), rig, temporal_mode=mode)
        assert pipe.temporal_mode == mode and pipe.temporal is not None
        rows = []
        for fs in frames:
            occ = pipe.run(fs).occupancy
            assert occ.mask_camera is not None
            full = all(s is not None for s in pipe.temporal.last_slots)
            rows.append((occ.semantics.copy(), occ.mask_camera.copy(), full))
        runs[mode] = rows
        pipe.close()
    diff, diff_vis, n = [], [], 0
    for (a, mask, full), (b, _, _) in zip(runs['lift'], runs['warp']):
        if not full:
            continue
        n += 1
        diff.append(float((a != b).mean()))
        diff_vis.append(float((a != b)[mask].mean()))
    res = {'model': name, 'seed': seed, 'frames': len(frames), 'frames_with_full_history': n,
           'mean_speed_mps': round(speed, 1), 'weights': 'random (seeded 0): no 4D weights exist here',
           'labels_differ_pct': round(100 * float(np.mean(diff)), 2) if diff else None,
           'labels_differ_visible_pct': round(100 * float(np.mean(diff_vis)), 2) if diff_vis else None}
    print(f'  {name}: {n} frames with full history at {speed:.1f} m/s: labels differ on '
          f'{res["labels_differ_pct"]} % of the voxels ({res["labels_differ_visible_pct"]} % of the visible ones)',
          flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--models', nargs='+', default=['pano-4d', 'pano-longterm8f'])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--no-cost', action='store_true', help='skip the cost measurement')
    ap.add_argument('--labels', action='store_true', help='also the lift-vs-warp label difference on a drive')
    ap.add_argument('--seed', type=int, default=9201)
    ap.add_argument('--seconds', type=float, default=3.0)
    ap.add_argument('--rate', type=float, default=2.0, help='frames per second of the drive')
    ap.add_argument('--fast-forward', type=float, default=3.0)
    ap.add_argument('--json', type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rate = matmul_gflops()
    print(f'machine: fp32 matmul {rate:.0f} GFLOPS ({args.threads} threads), torch {torch.__version__}', flush=True)
    report: dict[str, Any] = {'matmul_gflops': round(rate, 1), 'threads': args.threads, 'cost': [], 'labels': []}
    for name in args.models:
        if not args.no_cost:
            report['cost'].append(cost(name, args.repeats))
        if args.labels:
            report['labels'].append(labels(name, args.seed, args.seconds, args.rate, args.fast_forward,
                                           (450, 800)))
    report['matmul_gflops_after'] = round(matmul_gflops(), 1)
    print(f'machine: fp32 matmul {report["matmul_gflops_after"]:.0f} GFLOPS at the end', flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()

"""A/B of the synthetic renderer against its own version at another commit, in one process.

    .venv/bin/python bench/bench_render_ab.py --ref main          # this tree's renderer vs main's
    .venv/bin/python bench/bench_render_ab.py --ref 01e880d --sets 12

The reference `occ_ros/bag/render.py`, its rasteriser `occ_ros/bag/raster.py` and its compiled
passes (`occ_ros/bag/compose.py`, and `occ_ros/bag/colour.py` where the reference has it) are read
from git (`git show REF:…`) and imported beside the current ones; both render the same frame sets
of the demo world (seed 4242, six 900×1600 cameras, colour, no per-pixel classes: what the bag
writer renders), interleaved
(reference, current, reference, …) so that both see the same machine. Reported per six-camera
set: the median **CPU** seconds of this process (`time.process_time`, steadier than wall time on a
shared machine), their ratio, the largest pixel difference between the two renderers' images,
and the machine's fp32 matmul rate before and after (compare ratios, not seconds from different
days). Both renderers share the rest of the tree (world, boxes).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ref', default='main', help='git revision of the reference renderer (default main)')
    ap.add_argument('--sets', type=int, default=8, help='frame sets rendered by each renderer')
    ap.add_argument('--seed', type=int, default=4242)
    args = ap.parse_args(argv)

    from occ_ros.apps.machine import matmul_gflops
    from occ_ros.bag.render import FAR
    from occ_ros.bag.synth import SyntheticSequence

    def show(path: str) -> str | None:
        done = subprocess.run(['git', '-C', str(ROOT), 'show', f'{args.ref}:{path}'], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    # the reference's compiled passes (compose.py; colour.py once the colour pass had its own module),
    # its rasteriser and its render.py, each importing the others' reference versions
    modules = (('compose_ref', 'occ_ros/bag/compose.py'), ('colour_ref', 'occ_ros/bag/colour.py'),
               ('raster_ref', 'occ_ros/bag/raster.py'), ('render_ref', 'occ_ros/bag/render.py'))
    with tempfile.TemporaryDirectory() as tmp:
        ref = None
        for name, path in modules:
            text = show(path)
            if text is None:
                continue
            for other, other_path in modules:
                text = text.replace(f"from {other_path[:-3].replace('/', '.')} import", f'from {other} import')
            file = Path(tmp) / f'{name}.py'
            file.write_text(text)
            spec = importlib.util.spec_from_file_location(name, file)
            assert spec is not None and spec.loader is not None
            ref = importlib.util.module_from_spec(spec)
            sys.modules[name] = ref
            spec.loader.exec_module(ref)
    assert ref is not None

    gflops_before = matmul_gflops()
    seq = SyntheticSequence(args.seed, 6.0, 12.0, None, (900, 1600), ground_truth=False)
    renderers = {'ref': ref.Renderer(seq.world, list(seq.rig)), 'cur': seq.renderer}

    def render(name: str, i: int) -> tuple[float, list]:
        t = seq.time_of(i)
        pose = seq.world.ego_pose(t)
        boxes = seq.world.boxes_at(t, pose[:2, 3], FAR + 10.0)
        r = renderers[name]
        a = time.process_time()
        views = [r.render_camera(c, pose, boxes, frame_index=i, classes=False) for c in range(len(r.cameras))]
        return time.process_time() - a, views

    render('ref', 0)
    render('cur', 0)                                  # first calls: caches, compiled kernels
    cpu: dict[str, list[float]] = {'ref': [], 'cur': []}
    worst = 0
    for i in np.linspace(1, len(seq) - 1, args.sets).round().astype(int).tolist():
        ta, va = render('ref', i)
        tb, vb = render('cur', i)
        cpu['ref'].append(ta)
        cpu['cur'].append(tb)
        worst = max(worst, max(int(np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).max())
                               for a, b in zip(va, vb)))
        sys.stderr.write(f'\rset {len(cpu["cur"])}/{args.sets}: ref {ta:.3f} s, current {tb:.3f} s CPU ')
    sys.stderr.write('\n')
    med = {k: float(np.median(v)) for k, v in cpu.items()}
    res = {'ref': args.ref, 'sets': args.sets, 'cpu_s_per_set_ref': round(med['ref'], 3),
           'cpu_s_per_set_current': round(med['cur'], 3), 'speed_up': round(med['ref'] / med['cur'], 2),
           'max_abs_pixel_diff': worst, 'machine_matmul_gflops_before': round(gflops_before, 1),
           'machine_matmul_gflops_after': round(matmul_gflops(), 1)}
    print(json.dumps(res, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())

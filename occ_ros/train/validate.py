"""Re-score a checkpoint on its training record's validation frames with today's renderer.

    python -m occ_ros.train.validate --ckpt occ_ros/weights/lite_synth.ckpt [--write-record]

The frames are the record's `val_data` (seeds, seconds, rate, render size; the evaluation world),
rendered again by the current synthetic world and rig — so a renderer or rig change (e.g. the
CAM_BACK_LEFT fix of issue 19) shows in the figures — and scored by the trainer's own
`evaluate` (camera-masked mIoU, RayIoU and RayPQ from the official origins: the LiDAR positions of
the sequence's key frames), and again from one origin (the frame's own LiDAR position, the
protocol the record's older figures used). `--write-record` stores both under
`validation_rescored` in the checkpoint's JSON record, with the date and a note.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch


def rescore(ckpt: Path, workers: int = 2) -> dict[str, Any]:
    """{'frames', 'official_origins', 'single_origin'} of `ckpt` on its record's validation frames."""
    from occ_ros.model import load_checkpoint
    from occ_ros.train.data import DataSettings, build_cache
    from occ_ros.train.loop import evaluate, model_inputs

    record = json.loads(ckpt.with_suffix('.json').read_text())
    model, _ = load_checkpoint(ckpt)
    cfg = model.cfg                                          # type: ignore[attr-defined]
    val = record['val_data']
    src = (int(val['src_hw'][0]), int(val['src_hw'][1]))
    vset = build_cache(DataSettings(tuple(int(s) for s in val['seeds']), float(val['seconds']), float(val['rate']),
                                    src, keep_eval=True), cfg, workers, 'val frames')
    inputs = model_inputs(cfg, src)
    official = evaluate(model, vset, inputs, panoptic=True)
    single = evaluate(model, [dataclasses.replace(s, origins=None) for s in vset], inputs, panoptic=True)

    def short(r: dict[str, Any]) -> dict[str, Any]:
        return {**{k: round(float(r[k]), 2) for k in ('miou', 'rayiou', 'raypq')}, 'ray_protocol': r['ray_protocol']}
    return {'frames': len(vset), 'official_origins': short(official), 'single_origin': short(single),
            'per_class_iou': official['per_class_iou']}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='python -m occ_ros.train.validate', description=__doc__.split('\n')[0])
    p.add_argument('--ckpt', default='occ_ros/weights/lite_synth.ckpt', help='checkpoint (+ .json record)')
    p.add_argument('--workers', type=int, default=2, help='rendering processes')
    p.add_argument('--write-record', action='store_true', help="store the figures in the record's validation_rescored")
    p.add_argument('--note', default='the shipped weights on the record\'s validation frames rendered again by the '
                   'current renderer and rig')
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    ck = Path(a.ckpt)
    res = rescore(ck, a.workers)
    o, s = res['official_origins'], res['single_origin']
    print(f'{res["frames"]} validation frames: mIoU {o["miou"]:.2f}, official origins RayIoU {o["rayiou"]:.2f} '
          f'RayPQ {o["raypq"]:.2f}; one origin RayIoU {s["rayiou"]:.2f} RayPQ {s["raypq"]:.2f}')
    if a.write_record:
        path = ck.with_suffix('.json')
        record = json.loads(path.read_text())
        record['validation_rescored'] = {'date': datetime.date.today().isoformat(), 'note': a.note,
                                         'command': 'python -m occ_ros.train.validate --write-record', **res}
        path.write_text(json.dumps(record, indent=1) + '\n')
        print(path)
    return 0


if __name__ == '__main__':                                           # pragma: no cover
    sys.exit(main())

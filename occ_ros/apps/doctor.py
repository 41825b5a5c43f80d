"""`occ-ros doctor`: the GPU acceptance run, in phases that can be resumed; one JSON + Markdown report.

    occ-ros doctor --out doctor/                                  # every phase not done yet
    occ-ros doctor --out doctor/ --checkpoint flashocc-pano-tiny.pth   # + pano-tiny (fp16 engine)
    occ-ros doctor --out doctor/ --phase compare                  # run (again) one phase

Phases, in order (each result is cached as `<out>/phases/<name>.json`; a later run re-measures the
environment and skips a phase whose cached result is `ok` and was made for the same software,
GPU and options — anything else, `failed` and `skipped` included, runs again):

  environment  CUDA, torch, TensorRT (version, strong/weak typing), ONNX Runtime, the GPU, and the
               machine's fp32 matmul rate (CPU, and the GPU's when there is one).
  export       the shipped `lite` fp32 and fp16 (+ fp32 with its float32 islands when TensorRT has
               no strong typing); with --checkpoint, pano-tiny fp32 (ONNX Runtime reference) + fp16.
  build        GPU: every engine (`lite` fp32 + fp16, pano-tiny fp16), build time per engine.
  compare      ONNX Runtime fp32 on rendered frames is the reference; candidates: on the CPU the
               fp16 graph in ONNX Runtime, on a GPU the engines — finite outputs, label agreement.
  timing       GPU: the engine alone (p50/p90 over --runs calls) and the whole node over DDS at
               12 Hz (`bench/bench_node.py` with the tensorrt backend; raw rgb8 and JPEG cameras).
  report       `<out>/report.json` and `<out>/report.md` from the phase results.

On a CPU-only machine the GPU phases are `skipped` with what is missing, and the rest run.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from occ_ros.core.errors import ConfigError

if TYPE_CHECKING:
    from occ_ros.backends.protocol import InferenceBackend

LOG = logging.getLogger('occ_ros.doctor')
PHASES = ('environment', 'export', 'build', 'compare', 'timing', 'report')
FP16_AGREEMENT = 0.995          # label agreement of an fp16 graph/engine with ONNX Runtime fp32
FP32_AGREEMENT = 0.999          # … of an fp32 engine
REPO = Path(__file__).resolve().parents[2]
Result = dict[str, Any]
Say = Callable[[str], None]


class Skip(Exception):
    """A phase that cannot run on this machine; the message says what is missing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', type=Path, required=True, help='output directory (phase cache + report)')
    parser.add_argument('--phase', choices=PHASES, default=None,
                        help='run only this phase (again), using the cached results of the others')
    parser.add_argument('--force', action='store_true', help='re-run every phase, cached or not')
    parser.add_argument('--checkpoint', type=Path, default=None,
                        help='a pano-tiny checkpoint (official FlashOcc or occ_ros): exported, built (fp16) and '
                             'compared too')
    parser.add_argument('--checkpoint-model', default='pano-tiny',
                        help='model of --checkpoint (default pano-tiny; its engine is fp16 only)')
    parser.add_argument('--lite-precisions', default='fp32,fp16',
                        help='precisions of the shipped lite to export/build/compare (default fp32,fp16)')
    parser.add_argument('--frames', type=int, default=4, help='rendered frame sets for compare (default 4)')
    parser.add_argument('--runs', type=int, default=50, help='engine calls timed in the timing phase')
    parser.add_argument('--node-seconds', type=float, default=20.0,
                        help='measured seconds of the node over DDS at 12 Hz (timing phase)')
    parser.add_argument('--device', default='cuda:0', help='GPU to check (default cuda:0)')


# ---- phase bookkeeping -------------------------------------------------------------------------------
def phase_path(out: Path, name: str) -> Path:
    return out / 'phases' / f'{name}.json'


def load_phase(out: Path, name: str) -> Optional[Result]:
    p = phase_path(out, name)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None                      # unreadable: run the phase again
    return data if isinstance(data, dict) else None


PHASE_OPTIONS = {'export': ('lite_precisions', 'checkpoint_model'),
                 'build': ('lite_precisions', 'checkpoint_model', 'device'),
                 'compare': ('lite_precisions', 'checkpoint_model', 'device', 'frames'),
                 'timing': ('lite_precisions', 'checkpoint_model', 'device', 'runs', 'node_seconds')}


def fingerprint(args: argparse.Namespace, phase: str) -> str:
    """What a cached result of `phase` depends on: the software and GPU found by the environment
    phase (not its speed), the checkpoint, and the options the phase uses (`PHASE_OPTIONS`)."""
    env = (load_phase(args.out, 'environment') or {}).get('result', {})
    facts = {k: env.get(k) for k in ('torch', 'torch_cuda', 'cuda', 'tensorrt', 'tensorrt_version',
                                      'tensorrt_typing', 'onnxruntime', 'onnxruntime_providers', 'gpu')}
    ck = Path(args.checkpoint) if args.checkpoint is not None else None
    facts.update({k: getattr(args, k) for k in PHASE_OPTIONS.get(phase, ())})
    facts['checkpoint'] = None if ck is None else [str(ck.resolve()), ck.stat().st_size if ck.is_file() else None]
    return json.dumps(facts, sort_keys=True)


def run_phase(out: Path, name: str, fn: Callable[[], Result], say: Say, stamp: str = '') -> Result:
    """Run one phase, time it and cache its result (status ok / skipped / failed) with `stamp`
    (the `fingerprint` it was made under)."""
    from occ_ros.backends.engine_cache import atomic_write

    started = datetime.now(timezone.utc).isoformat(timespec='seconds')
    t0 = time.monotonic()
    say(f'phase {name} …')
    try:
        record: Result = {'status': 'ok', 'result': fn()}
    except Skip as e:
        record = {'status': 'skipped', 'reason': str(e)}
    except Exception as e:              # a failed phase is reported, the others still run
        LOG.debug('phase %s failed', name, exc_info=True)
        record = {'status': 'failed', 'reason': f'{type(e).__name__}: {e}'}
    record.update(phase=name, started_utc=started, seconds=round(time.monotonic() - t0, 2), fingerprint=stamp)
    atomic_write(phase_path(out, name), (json.dumps(record, indent=2, sort_keys=True) + '\n').encode())
    say(f'phase {name}: {record["status"]} in {record["seconds"]:.1f} s'
        + (f' — {record["reason"]}' if 'reason' in record else ''))
    return record


def _result(out: Path, name: str) -> Result:
    rec = load_phase(out, name)
    if rec is None or rec.get('status') != 'ok':
        raise Skip(f'phase {name} has no result yet (run `occ-ros doctor --out {out} --phase {name}`)')
    res = rec['result']
    assert isinstance(res, dict)
    return res


def _gpu_missing(env: Result) -> str:
    """'' when the GPU half can run, else what is missing."""
    missing = [why for ok, why in ((env['cuda'], env['cuda_reason']), (env['tensorrt'], env['tensorrt_reason']))
               if not ok]
    return '; '.join(missing)


# ---- phases ----------------------------------------------------------------------------------------
def environment(args: argparse.Namespace) -> Result:
    import torch

    from occ_ros.apps.machine import matmul_gflops
    from occ_ros.backends.factory import probe_availability

    avail = probe_availability()
    env: Result = {
        'python': sys.version.split()[0], 'torch': torch.__version__, 'torch_cuda': torch.version.cuda,
        'cuda': avail.cuda, 'cuda_reason': avail.cuda_reason,
        'tensorrt': avail.tensorrt, 'tensorrt_reason': avail.tensorrt_reason,
        'onnxruntime': avail.onnxruntime, 'onnxruntime_reason': avail.onnxruntime_reason,
        'cpu_threads': torch.get_num_threads(), 'cpus': os.cpu_count(),
        'cpu_matmul_gflops': round(matmul_gflops(2048, 3), 1),          # the README's 2048² convention
    }
    if avail.onnxruntime:
        import onnxruntime as ort
        env['onnxruntime_providers'] = list(ort.get_available_providers())
    if avail.tensorrt:
        import tensorrt as trt

        from occ_ros.backends.tensorrt_compat import network_typing, unsupported_reason
        env['tensorrt_version'] = str(trt.__version__)
        env['tensorrt_typing'] = network_typing()
        env['tensorrt_unsupported'] = unsupported_reason()
    if avail.cuda:
        dev = torch.device(args.device)
        props = torch.cuda.get_device_properties(dev)
        env['gpu'] = {'name': props.name, 'compute_capability': f'{props.major}.{props.minor}',
                      'memory_gib': round(props.total_memory / 2 ** 30, 1)}
        env['gpu_matmul_gflops'] = round(matmul_gflops(4096, 20, device=str(dev)), 1)
    env['gpu_half'] = _gpu_missing(env) or 'ready'
    return env


def _targets(args: argparse.Namespace, env: Result) -> list[Result]:
    """What to export: (model, precision, islands, checkpoint, role) for this machine."""
    precisions = [p.strip() for p in args.lite_precisions.split(',') if p.strip()]
    if not set(precisions) <= {'fp32', 'fp16'} or not precisions:
        raise ConfigError(f'--lite-precisions takes fp32 and/or fp16, got {args.lite_precisions!r}')
    weak = env.get('tensorrt_typing') == 'weak'
    out: list[Result] = [{'model': 'lite', 'precision': 'fp32', 'islands': False, 'checkpoint': None,
                          'role': 'reference'}]
    for p in precisions:
        if p == 'fp32':
            out[0]['role'] = 'reference+engine'
        else:
            out.append({'model': 'lite', 'precision': 'fp16', 'islands': False, 'checkpoint': None,
                        'role': 'candidate' if weak else 'candidate+engine'})
            if weak:       # TensorRT 8.5/8.6: the fp16 engine comes from the fp32 graph + islands
                out.append({'model': 'lite', 'precision': 'fp32', 'islands': True, 'checkpoint': None,
                            'role': 'engine-fp16'})
    if args.checkpoint is not None:     # fp16 engine only; its fp32 graph is the ONNX Runtime reference
        ck, name = str(args.checkpoint), args.checkpoint_model
        out.append({'model': name, 'precision': 'fp32', 'islands': weak, 'checkpoint': ck,
                    'role': 'reference+engine-fp16' if weak else 'reference'})
        out.append({'model': name, 'precision': 'fp16', 'islands': False, 'checkpoint': ck,
                    'role': 'candidate' if weak else 'candidate+engine'})
    return out


def export(args: argparse.Namespace, say: Say) -> Result:
    from occ_ros.backends.export import ensure_onnx
    from occ_ros.model.loading import load_model
    from occ_ros.weights import default_checkpoint

    from occ_ros.apps.machine import network_gflop
    from occ_ros.backends.deploy import deploy_module, example_inputs

    env = _result(args.out, 'environment')
    graphs = []
    models: dict[tuple[str, Optional[str]], Any] = {}
    gflop: dict[str, float] = {}
    for t in _targets(args, env):
        key = (t['model'], t['checkpoint'])
        if key not in models:
            ck = t['checkpoint'] or default_checkpoint(t['model'])
            models[key] = load_model(t['model'], ck, say)
            model = models[key].eval()      # work per frame (matmuls + convolutions), for the timing phase
            gflop[t['model']] = round(network_gflop(deploy_module(model, 'fp32').eval().run,
                                                    example_inputs(model.cfg)), 2)
        t0 = time.monotonic()
        path = ensure_onnx(models[key], precision=t['precision'], directory=args.out / 'onnx',
                           progress=say, fp32_islands=t['islands'])
        graphs.append({**t, 'onnx': str(path), 'seconds': round(time.monotonic() - t0, 1),
                       'mib': round(path.stat().st_size / 2 ** 20, 1)})
    return {'graphs': graphs, 'gflop_per_frame': gflop}


def _engine_jobs(graphs: list[Result]) -> list[tuple[Result, Optional[str]]]:
    """(graph, engine precision) for every graph that becomes an engine."""
    jobs: list[tuple[Result, Optional[str]]] = []
    for g in graphs:
        if g['role'] in ('reference+engine', 'candidate+engine'):
            jobs.append((g, None))
        elif g['role'] in ('engine-fp16', 'reference+engine-fp16'):
            jobs.append((g, 'fp16'))
    return jobs


def build(args: argparse.Namespace, say: Say) -> Result:
    env = _result(args.out, 'environment')
    missing = _gpu_missing(env)
    if missing:
        raise Skip(missing)
    from occ_ros.backends.tensorrt_backend import open_engine_cache

    cache = open_engine_cache(args.out / 'engines', device=args.device, progress=say)
    engines = []
    for g, precision in _engine_jobs(_result(args.out, 'export')['graphs']):
        t0 = time.monotonic()
        loaded = cache.load(g['onnx'], precision=precision)
        engines.append({'model': g['model'], 'checkpoint': g['checkpoint'],
                        'precision': precision or g['precision'], 'onnx': g['onnx'],
                        'engine': str(loaded.paths.engine), 'built': loaded.built,
                        'build_seconds': round(time.monotonic() - t0, 1),
                        'mib': round(len(loaded.engine) / 2 ** 20, 1)})
    return {'engines': engines}


def rendered_inputs(model: str, checkpoint: Optional[str], frames: int) -> list[dict[str, Any]]:
    """Network inputs of `frames` rendered synthetic frame sets (the node's own preprocessing)."""
    from occ_ros.bag.synth import SyntheticSequence
    from occ_ros.pipeline import OccupancyPipeline

    seq = SyntheticSequence(4242, seconds=frames / 2.0, rate=2.0, image_hw=(450, 800), ground_truth=False)
    pipe = OccupancyPipeline.from_params(model, rig=seq.rig, checkpoint=checkpoint, backend='torch', threads=2)
    try:
        return [pipe.network_inputs(seq.frame(i).frame_set(seq.rig))[0] for i in range(min(frames, len(seq)))]
    finally:
        pipe.close()


def agreement(reference: dict[str, Any], candidate: dict[str, Any]) -> Result:
    """Finite float outputs and label agreement of one frame."""
    import torch

    from occ_ros.backends import io_spec as ios

    finite = all(bool(torch.isfinite(t.float().cpu()).all()) for t in candidate.values() if t.is_floating_point())
    equal = (candidate[ios.OCC_LABEL].cpu() == reference[ios.OCC_LABEL].cpu()).double().mean().item()
    return {'finite': finite, 'label_agreement': equal}


def compare(args: argparse.Namespace, say: Say) -> Result:
    from occ_ros.backends.ort_backend import OrtBackend

    env = _result(args.out, 'environment')
    graphs = _result(args.out, 'export')['graphs']
    built = load_phase(args.out, 'build') if not _gpu_missing(env) else None
    engines = built['result']['engines'] if built and built.get('status') == 'ok' else []
    rows = []
    for model in dict.fromkeys(g['model'] for g in graphs):
        fp32 = [g for g in graphs if g['model'] == model and g['precision'] == 'fp32']
        ref_graph = min(fp32, key=lambda g: bool(g['islands']))     # the plain fp32 graph first
        has_candidate = any(g['model'] == model and g['precision'] == 'fp16' for g in graphs) or \
            any(e['model'] == model for e in engines)
        if not has_candidate:
            continue
        frames = rendered_inputs(model, ref_graph['checkpoint'], args.frames)
        say(f'{model}: {len(frames)} rendered frame sets; reference = ONNX Runtime fp32')
        # the reference runs on the CPU: no TF32 or GPU kernels in it, whatever this machine has
        with OrtBackend(ref_graph['onnx'], device='cpu') as ref_backend:
            refs = [ref_backend.infer(f) for f in frames]
        # (name, how to open it, agreement threshold); opened one at a time
        candidates: list[tuple[str, Callable[[], 'InferenceBackend'], float]] = [
            ('onnxruntime fp16 graph', functools.partial(OrtBackend, g['onnx'], device='cpu'), FP16_AGREEMENT)
            for g in graphs if g['model'] == model and g['precision'] == 'fp16']
        for e in engines:
            if e['model'] == model:
                from occ_ros.backends.tensorrt_backend import TensorRTBackend
                candidates.append((f'tensorrt {e["precision"]} engine', functools.partial(
                    TensorRTBackend, e['onnx'], device=args.device, engine_dir=args.out / 'engines',
                    allow_build=False, precision=e['precision']),
                    FP16_AGREEMENT if e['precision'] == 'fp16' else FP32_AGREEMENT))
        for name, open_backend, threshold in candidates:
            with open_backend() as backend:
                per = [agreement(r, backend.infer({k: v.to(backend.device) for k, v in f.items()}))
                       for r, f in zip(refs, frames)]
            worst = min(p['label_agreement'] for p in per)
            rows.append({'model': model, 'candidate': name, 'frames': len(per),
                         'finite': all(p['finite'] for p in per),
                         'label_agreement_min': worst,
                         'label_agreement_mean': sum(p['label_agreement'] for p in per) / len(per),
                         'threshold': threshold, 'pass': all(p['finite'] for p in per) and worst >= threshold})
            say(f'{model} {name}: min agreement {worst:.4%} (≥ {threshold:.1%}), finite {rows[-1]["finite"]}')
    if not engines:
        rows.append({'model': '*', 'candidate': 'tensorrt engines',
                     'skipped': _gpu_missing(env) or 'the build phase has no result'})
    return {'rows': rows, 'pass': all(r.get('pass', True) for r in rows)}


def timing(args: argparse.Namespace, say: Say) -> Result:
    import numpy as np
    import torch

    env = _result(args.out, 'environment')
    missing = _gpu_missing(env)
    if missing:
        raise Skip(missing)
    from occ_ros.backends.tensorrt_backend import TensorRTBackend

    rows: list[Result] = []
    gflop = _result(args.out, 'export').get('gflop_per_frame', {})
    rate = env.get('gpu_matmul_gflops')
    for e in _result(args.out, 'build')['engines']:
        frame = rendered_inputs(e['model'], e['checkpoint'], 1)[0]
        inputs = {k: v.to(args.device) for k, v in frame.items()}
        with TensorRTBackend(e['onnx'], device=args.device, engine_dir=args.out / 'engines', allow_build=False,
                             precision=e['precision']) as tb:
            for _ in range(5):
                tb.infer(inputs)
            ms = []
            for _ in range(args.runs):
                torch.cuda.synchronize(args.device)
                t0 = time.perf_counter()
                tb.infer(inputs)
                torch.cuda.synchronize(args.device)
                ms.append((time.perf_counter() - t0) * 1e3)
        p50 = float(np.percentile(ms, 50))
        work = gflop.get(e['model'])
        rows.append({'model': e['model'], 'precision': e['precision'], 'runs': args.runs,
                     'p50_ms': p50, 'p90_ms': float(np.percentile(ms, 90)), 'gflop_per_frame': work,
                     # > 1 is possible for fp16: the reference is the GPU's fp32 matmul rate
                     'fraction_of_fp32_matmul_rate': round(work / (p50 / 1e3) / rate, 3) if work and rate else None})
        say(f'{e["model"]} {e["precision"]} engine: p50 {rows[-1]["p50_ms"]:.2f} ms')
    node = _node_over_dds(args, say)
    return {'engine': rows, 'node': node, 'gpu_matmul_gflops': env.get('gpu_matmul_gflops')}


def _node_over_dds(args: argparse.Namespace, say: Say) -> Result:
    """`bench/bench_node.py`: the node in its own process (tensorrt backend, the shipped lite, fp16),
    six cameras over DDS at 12 Hz, raw rgb8 and JPEG; its engine cache is the doctor's."""
    script = REPO / 'bench' / 'bench_node.py'
    if not script.is_file():
        return {'skipped': f'{script} is not here (run the doctor from a source checkout)'}
    results: Result = {}
    for transport in ('raw', 'jpeg'):
        out = args.out / f'node_bench_{transport}.json'
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(script), '--backend', 'tensorrt', '--model', 'lite', '--rate', '12',
               '--seconds', str(args.node_seconds), '--out', str(out),
               '--node-arg=-p', f'--node-arg=device:={args.device}',
               '--node-arg=-p', f'--node-arg=engine_dir:={args.out / "engines"}',
               *(['--jpeg'] if transport == 'jpeg' else [])]
        say(f'node over DDS at 12 Hz ({transport}): ' + ' '.join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if not out.is_file():
            results[transport] = {'failed': (proc.stdout + proc.stderr)[-2000:]}
            continue
        report = json.loads(out.read_text())
        n = report['node']
        results[transport] = {
            'output_rate_hz': n['output_rate_hz'], 'outputs': n['outputs'], 'dropped_sets': n['dropped_sets'],
            'stamp_to_publish_p50_ms': n['stamp_to_publish_ms']['p50'],
            'stamp_to_publish_p99_ms': n['stamp_to_publish_ms']['p99'],
            'bare_pipeline_p50_ms': report.get('bare_pipeline', {}).get('p50_ms'),
            'e2e_over_in_node_pipeline_p50': report.get('e2e_over_in_node_pipeline_p50'),
            'node_cpu': n.get('node_cpu'),                # cores, ms per image, ms per output (/proc)
            'cpu_matmul_gflops': [report.get('machine_gflops_before'), report.get('machine_gflops_after')]}
    return results


def write_report(args: argparse.Namespace) -> Result:
    """One JSON with every phase's record and a Markdown summary of them."""
    from occ_ros.backends.engine_cache import atomic_write

    phases = {name: load_phase(args.out, name) or {'status': 'not run'} for name in PHASES if name != 'report'}
    report = {'generated_utc': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'phases': phases}
    atomic_write(args.out / 'report.json', (json.dumps(report, indent=2, sort_keys=True) + '\n').encode())
    atomic_write(args.out / 'report.md', markdown(report).encode())
    return {'json': str(args.out / 'report.json'), 'markdown': str(args.out / 'report.md')}


def markdown(report: Result) -> str:
    phases = report['phases']
    lines = ['# occ-ros doctor', '', f'generated {report["generated_utc"]}', '',
             '| phase | status | seconds | note |', '|---|---|---|---|']
    env = phases.get('environment', {}).get('result', {})
    for name, rec in phases.items():
        note = rec.get('reason', '')
        if env and note == env.get('gpu_half'):
            note = 'needs the GPU half (see Environment)'
        lines.append(f'| {name} | {rec.get("status")} | {rec.get("seconds", "")} | {note} |')
    if env:
        lines += ['', '## Environment', '',
                  f'- torch {env["torch"]} (CUDA {env["torch_cuda"]}), CUDA: {env["cuda_reason"]}',
                  f'- TensorRT: {env.get("tensorrt_version", env["tensorrt_reason"])}'
                  + (f' ({env["tensorrt_typing"]}ly typed)' if 'tensorrt_typing' in env else ''),
                  f'- ONNX Runtime: {env["onnxruntime_reason"]}',
                  f'- fp32 2048² matmul rate: CPU {env["cpu_matmul_gflops"]} GFLOPS on {env["cpu_threads"]} threads'
                  + (f', GPU {env["gpu_matmul_gflops"]} GFLOPS (4096²)' if 'gpu_matmul_gflops' in env else ''),
                  f'- GPU half: {env["gpu_half"]}']
    for g in phases.get('export', {}).get('result', {}).get('graphs', []):
        if g is phases['export']['result']['graphs'][0]:
            lines += ['', '## Exported graphs', '', '| model | precision | islands | MiB | seconds |',
                      '|---|---|---|---|---|']
        lines.append(f'| {g["model"]} | {g["precision"]} | {g["islands"]} | {g["mib"]} | {g["seconds"]} |')
    work = phases.get('export', {}).get('result', {}).get('gflop_per_frame', {})
    if work:
        lines.append('\nWork per frame (fp32 matmuls + convolutions): '
                     + ', '.join(f'{m} {g} GFLOP' for m, g in work.items()))
    for e in phases.get('build', {}).get('result', {}).get('engines', []):
        if e is phases['build']['result']['engines'][0]:
            lines += ['', '## Engines', '', '| model | precision | build s | MiB | built now |',
                      '|---|---|---|---|---|']
        lines.append(f'| {e["model"]} | {e["precision"]} | {e["build_seconds"]} | {e["mib"]} | {e["built"]} |')
    rows = phases.get('compare', {}).get('result', {}).get('rows', [])
    if rows:
        lines += ['', '## Against ONNX Runtime fp32 (rendered frames)', '',
                  '| model | candidate | frames | finite | min label agreement | pass |', '|---|---|---|---|---|---|']
        for r in rows:
            if 'skipped' in r:
                why = 'the GPU half (see Environment)' if r['skipped'] == env.get('gpu_half') else r['skipped']
                lines.append(f'| {r["model"]} | {r["candidate"]} | | | skipped: {why} | |')
            else:
                lines.append(f'| {r["model"]} | {r["candidate"]} | {r["frames"]} | {r["finite"]} | '
                             f'{r["label_agreement_min"]:.4%} | {r["pass"]} |')
    t = phases.get('timing', {}).get('result', {})
    if t:
        lines += ['', '## Timing', '',
                  f'GPU fp32 4096² matmul rate in this run: {t.get("gpu_matmul_gflops")} GFLOPS', '']
        for r in t['engine']:
            lines.append(f'- {r["model"]} {r["precision"]} engine: p50 {r["p50_ms"]:.2f} ms, p90 {r["p90_ms"]:.2f} ms, '
                         f'{r["gflop_per_frame"]} GFLOP/frame = {r["fraction_of_fp32_matmul_rate"]} × the fp32 '
                         'matmul rate')
        for transport, r in t['node'].items():
            lines.append(f'- node over DDS at 12 Hz, {transport} cameras: {json.dumps(r)}')
    return '\n'.join(lines) + '\n'


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f'[doctor] {line}', flush=True)

    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Callable[[], Result]] = {
        'environment': lambda: environment(args), 'export': lambda: export(args, say),
        'build': lambda: build(args, say), 'compare': lambda: compare(args, say),
        'timing': lambda: timing(args, say), 'report': lambda: write_report(args),
    }
    names = [args.phase] if args.phase else list(PHASES)
    records = {}
    for name in names:
        stamp = fingerprint(args, name) if name != 'environment' else ''
        cached = load_phase(args.out, name)
        if name not in ('environment', 'report') and not args.force and not args.phase and cached is not None \
                and cached.get('status') == 'ok' and cached.get('fingerprint') == stamp:
            say(f'phase {name}: cached ok ({cached.get("started_utc")}); --force or --phase {name} to re-run')
            records[name] = cached
            continue
        records[name] = run_phase(args.out, name, steps[name], say, stamp)
    env = (load_phase(args.out, 'environment') or {}).get('result', {})
    if env and env.get('gpu_half') != 'ready':
        say(f'CPU-only run: the GPU half (build, TensorRT compare, timing) needs: {env["gpu_half"]}')
    if not args.phase:
        say(f'report: {args.out / "report.md"}')
    failed = [n for n, r in records.items() if r.get('status') == 'failed']
    bad_compare = records.get('compare', {}).get('result', {}).get('pass') is False
    return 1 if failed or bad_compare else 0

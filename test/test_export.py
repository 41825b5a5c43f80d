"""ONNX export: TensorRT-native operators, ONNX Runtime ≡ PyTorch, fp16 ≡ fp32, official weights.

Random weights make a poor stand-in for a trained network when comparing precisions: a randomly
initialised ResNet-50 with identity BatchNorm statistics produces activations of 10^4 and
near-uniform occupancy logits (median top-2 margin ≈ 0.2), where any rounding flips labels — a
trained head is confident on most voxels. `condition_like_trained` therefore gives the random
network the statistics of a trained one before comparing: residual-branch BN gammas of 0.2
(trained ResNets have small ones), BatchNorm2d running statistics measured on random images,
output layers scaled to unit-variance outputs, and the occupancy classifier biased towards 'free'
(+4 logits; most Occ3D voxels are free). The parity checks then use the thresholds of the issue.

The full operator matrix (9 configs × fp32/fp16) takes about two minutes on the 2-core machine and
is marked slow (it still runs in CI).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from occ_ros.apps import export as export_cli
from occ_ros.backends import deploy as dep
from occ_ros.backends import export as ex
from occ_ros.backends import export_checks as checks
from occ_ros.model.loading import load_model
from occ_ros.backends import io_spec as ios
from occ_ros.backends.deploy import DeployModule
from occ_ros.backends.export import export_model_proto, export_onnx
from occ_ros.backends.export_checks import tensorrt_op_violations
from occ_ros.core.classes import FREE
from occ_ros.core.errors import BackendError, ConfigError
from occ_ros.geometry import compute_bev_geometry, nuscenes_rig
from occ_ros.model import MODEL_NAMES, build_model
from occ_ros.model.heads import CenternessHead, OccHead
from occ_ros.model.layers import BasicBlock, Bottleneck

ort = pytest.importorskip('onnxruntime')

OFFICIAL_KEYS = Path(__file__).resolve().parent / 'data' / 'flashocc_pano_tiny_keys.json'
PARITY_MODELS = ('pano-tiny', 'lite')


# ---- fixtures ------------------------------------------------------------------------------------
def frame_inputs(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """One frame on the nuScenes rig: real pool tables and camera vectors, a random image."""
    cfg = model.cfg
    geo = compute_bev_geometry(cfg, nuscenes_rig(), fast_path=False)
    inputs = dep.example_inputs(cfg, seed=seed)
    inputs[ios.POOL_DEPTH_IDX], inputs[ios.POOL_FEAT_IDX], inputs[ios.POOL_CELL_ROW] = \
        geo.pool_index.tensors()
    inputs[ios.CAM_VEC] = geo.cam_vec.float()
    return inputs


@torch.no_grad()
def condition_like_trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give a randomly initialised FlashOcc the statistics of a trained network (see module doc)."""
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.constant_(m.bn2.weight, 0.2)
        elif isinstance(m, Bottleneck):
            nn.init.constant_(m.bn3.weight, 0.2)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None                                     # cumulative average
    deploy = DeployModule(model)
    model.train()
    for k in range(2):
        deploy.run(frame_inputs(model, seed + 100 + k))
    model.eval()
    # output layers → unit-variance outputs
    inputs = frame_inputs(model, seed + 200)
    bev, _ = model.view_transform(model.encode_images(inputs[ios.IMG]), inputs[ios.CAM_VEC],
                                  inputs[ios.POOL_DEPTH_IDX], inputs[ios.POOL_FEAT_IDX],
                                  inputs[ios.POOL_CELL_ROW])
    history = (inputs[ios.BEV_HISTORY], inputs[ios.HISTORY_VALID]) if model.cfg.num_frames > 1 else ()
    feats = model.encode_bev(model.pre_process(bev), *history)
    occ = next(m for m in model.modules() if isinstance(m, OccHead))
    final = occ.predicter[-1]
    std = occ(feats).std()
    final.weight /= std
    final.bias /= std
    final.bias.view(model.cfg.grid.nz, model.cfg.num_classes)[:, FREE] += 4.0
    for head in (m for m in model.modules() if isinstance(m, CenternessHead)):
        shared = head.shared_conv(feats)
        sep = head.task_heads[0]
        for name in head.outputs:
            last = getattr(sep, name)[-1]
            std = getattr(sep, name)(shared).std()
            last.weight /= std
            last.bias /= std
    return model


@pytest.fixture(scope='session')
def conditioned():
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = condition_like_trained(build_model(name))
        return cache[name]
    return get


@pytest.fixture(scope='session')
def official_pano_tiny(conditioned, tmp_path_factory):
    """A synthetic official (mmcv-format) pano-tiny checkpoint with exactly the reference names and
    shapes, loaded back through the `occ-ros export` loader: (path, loaded model)."""
    entries = json.loads(OFFICIAL_KEYS.read_text())
    sd = {k: v.clone() for k, v in conditioned('pano-tiny').state_dict().items()}
    assert {e['key']: tuple(e['shape']) for e in entries} == {k: tuple(v.shape) for k, v in sd.items()}
    path = tmp_path_factory.mktemp('ckpt') / 'panoptic-flashocc-r50-depth-tiny-pano.pth'
    torch.save({'meta': {'epoch': 24, 'mmcv_version': '1.5.3'}, 'state_dict': sd}, path)
    lines: list[str] = []
    model = load_model('pano-tiny', path, lines.append)
    assert any('loaded 586 tensors (mmcv checkpoint)' in ln for ln in lines), lines
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    return path, model


@pytest.fixture(scope='session')
def exported(conditioned, official_pano_tiny, tmp_path_factory):
    """(model, {precision: onnx path}) for the parity models; pano-tiny comes from the checkpoint."""
    out_dir = tmp_path_factory.mktemp('onnx')
    cache: dict[str, tuple[nn.Module, dict[str, Path]]] = {}

    def get(name: str):
        if name not in cache:
            model = official_pano_tiny[1] if name == 'pano-tiny' else conditioned(name)
            paths = {p: export_onnx(model, out_dir / f'{name}.{p}.onnx', p, progress=lambda s: None)
                     for p in ('fp32', 'fp16')}
            cache[name] = (model, paths)
        return cache[name]
    return get


def run_ort(path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    feeds = {i.name: inputs[i.name].numpy() for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return {n: torch.from_numpy(a) for n, a in zip(names, sess.run(names, feeds))}


# ---- operator whitelist ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('name', MODEL_NAMES)
def test_every_config_exports_to_tensorrt_native_ops(name: str):
    model = build_model(name).eval()
    for precision in ('fp32', 'fp16'):
        proto = export_model_proto(model, precision, progress=lambda s: None)
        assert tensorrt_op_violations(proto) == []
        assert all(n.domain in ('', 'ai.onnx') for n in proto.graph.node)
        assert {n.op_type for n in proto.graph.node} <= checks.TENSORRT_NATIVE_OPS
        assert not {'ScatterND', 'ScatterElements', 'CumSum'} & {n.op_type for n in proto.graph.node}
        assert [i.version for i in proto.opset_import if i.domain in ('', 'ai.onnx')] == [ex.OPSET]
        assert ex.OPSET <= checks.MAX_TENSORRT_OPSET == 20
        assert not ios.same_contract(ios.onnx_io_spec(proto), ios.engine_io_spec(model.cfg))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta['occ_ros.model'] == name and meta['occ_ros.precision'] == precision
        del proto


def test_whitelist_rejects_scatter_cumsum_custom_domains_and_new_opsets():
    x = onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [4])
    i = onnx.helper.make_tensor_value_info('i', onnx.TensorProto.INT64, [4])
    nodes = [onnx.helper.make_node('ScatterND', ['x', 'i', 'x'], ['a'], reduction='add'),
             onnx.helper.make_node('CumSum', ['x', 'i'], ['b']),
             onnx.helper.make_node('BevPoolV2', ['x'], ['c'], domain='mmdeploy'),
             onnx.helper.make_node('Resize', ['x', '', 'i'], ['d'], mode='cubic'),
             onnx.helper.make_node('Einsum', ['x'], ['e'], equation='i->i')]
    graph = onnx.helper.make_graph(nodes, 'g', [x, i], [x])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', 21),
                                                         onnx.helper.make_opsetid('mmdeploy', 1)])
    problems = '\n'.join(tensorrt_op_violations(model))
    for needle in ('ScatterND', 'CumSum', "custom domain 'mmdeploy'", "mode 'cubic'", 'Einsum',
                   'opset 21'):
        assert needle in problems


def test_graph_fp16_types_keep_precision_critical_parts_fp32(exported):
    """In the fp16 graph: softmaxes, the pool MatMuls and the argmax run on float32 tensors, the
    convolutions on float16; inputs img/cam_vec and every float output are float32."""
    _, paths = exported('pano-tiny')
    model = onnx.load(str(paths['fp16']))           # the exporter records every tensor's type
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    by_op: dict[str, list[int]] = {}
    for node in model.graph.node:
        by_op.setdefault(node.op_type, []).append(types.get(node.input[0]))
    assert set(by_op['Softmax']) == {f32} and len(by_op['Softmax']) == 1      # the depth distribution
    assert set(by_op['ArgMax']) == {f32}
    assert f16 in by_op['Conv'] and f32 not in by_op['Conv']
    assert by_op['MatMul'].count(f32) >= sum(c > 0 for c in build_model('pano-tiny').cfg.pool_bounds.capacities)
    assert types[ios.IMG] == types[ios.CAM_VEC] == f32
    assert {types[o.name] for o in model.graph.output} == {f32, onnx.TensorProto.INT32}
    assert any(t.data_type == f16 for t in model.graph.initializer)


def test_fp32_islands_of_pano_tiny_cover_the_camera_path(exported):
    """TensorRT 8.x pins, in the fp32 graph, the nodes the strongly typed fp16 graph computes in
    float32 (precision_islands). For the BEVDepth DepthNet of pano-tiny these include the whole
    camera-vector path: every node reading `cam_vec`, and the BatchNormalization on it."""
    from collections import Counter

    from occ_ros.backends.precision_islands import mark_islands, read_islands

    from occ_ros.model.depthnet import DepthNet

    model, paths = exported('pano-tiny')
    fp32, fp16 = onnx.load(str(paths['fp32'])), onnx.load(str(paths['fp16']))
    names = set(mark_islands(fp32, fp16))              # BackendError if an island node has no fp32 twin
    assert read_islands(fp32) == names
    ops = {n.name: n.op_type for n in fp32.graph.node}
    kinds = Counter(ops[n] for n in names)
    cam_readers = [n.name for n in fp32.graph.node if ios.CAM_VEC in n.input]
    assert cam_readers and set(cam_readers) <= names
    # the camera path: its BatchNorm1d and every Linear of the two camera MLPs (the occupancy
    # head's Linear layers around the Softplus stay fp16)
    depthnets = [m for m in model.modules() if isinstance(m, DepthNet)]
    linears = sum(isinstance(m, nn.Linear) for d in depthnets for mlp in (d.depth_mlp, d.context_mlp)
                  for m in mlp.modules())
    assert kinds['BatchNormalization'] == len(depthnets) == 1 and kinds['Gemm'] == linears == 4
    assert kinds['Softmax'] == 1 and kinds['ArgMax'] == 1 and kinds['Softplus'] >= 1
    assert kinds['Conv'] == 0 and len(names) < len(ops) // 2


# ---- parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', PARITY_MODELS)
def test_onnxruntime_fp32_equals_pytorch_eager(name: str, exported):
    model, paths = exported(name)
    inputs = frame_inputs(model, seed=7)
    with torch.no_grad():
        eager = DeployModule(model.eval()).run(inputs)
    got = run_ort(paths['fp32'], inputs)
    assert list(got) == list(ios.engine_io_spec(model.cfg).output_names)
    for k, ref in eager.items():
        assert got[k].dtype == ref.dtype and got[k].shape == ref.shape, k
        if k == ios.OCC_LABEL:
            agree = (got[k] == ref).double().mean().item()
            assert agree >= 0.999, f'{name}: label agreement {agree:.5f}'
            assert len(torch.unique(ref)) > 1                      # not a constant prediction
        else:
            err = (got[k] - ref).abs().max().item()
            assert err <= 1e-3, f'{name} {k}: max abs error {err:.2e} (max |ref| {ref.abs().max():.2f})'


@pytest.mark.parametrize('name', PARITY_MODELS)
def test_fp16_graph_agrees_with_fp32_graph(name: str, exported):
    model, paths = exported(name)
    inputs = frame_inputs(model, seed=11)
    ref = run_ort(paths['fp32'], inputs)
    half = run_ort(paths['fp16'], inputs)
    agree = (half[ios.OCC_LABEL] == ref[ios.OCC_LABEL]).double().mean().item()
    assert agree >= 0.995, f'{name}: fp16 vs fp32 label agreement {agree:.5f}'
    for k in (ios.HEATMAP, ios.REG, ios.HEIGHT):
        rel = ((half[k] - ref[k]).norm() / ref[k].norm()).item()
        assert rel < 0.05, f'{name} {k}: relative L2 error {rel:.3f}'
        assert torch.isfinite(half[k]).all()


def test_official_checkpoint_export_equals_eager(official_pano_tiny, exported):
    """The pano-tiny parity above runs on the graph exported from the synthetic official
    checkpoint; here: its metadata and that the export did not touch the loaded weights."""
    path, model = official_pano_tiny
    _, paths = exported('pano-tiny')
    meta = ex.read_metadata(paths['fp32'])
    assert meta['occ_ros.model'] == 'pano-tiny' and meta['occ_ros.precision'] == 'fp32'
    assert json.loads(meta['occ_ros.config'])['name'] == 'pano-tiny'
    sd = torch.load(path, weights_only=True)['state_dict']
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k                              # export left weights alone
    assert not model.training


# ---- deploy module / CLI ---------------------------------------------------------------------------
def test_fp32_softmax_policy_and_caller_model_untouched():
    model = build_model('lite').eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deploy = DeployModule(model, 'fp16')
    assert next(model.parameters()).dtype == torch.float32             # deep copy was halved
    assert next(deploy.model.parameters()).dtype == torch.float16
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    x = (torch.randn(2, 5) * 8).half()
    with dep.float32_softmax():
        y = x.softmax(-1)
        z = torch.nn.functional.log_softmax(x, dim=-1)
    assert y.dtype == z.dtype == torch.float16
    assert torch.equal(y, torch.softmax(x.float(), -1).half())
    assert torch.equal(z, torch.log_softmax(x.float(), -1).half())
    with pytest.raises(ConfigError):
        DeployModule(model, 'int8')


def test_export_cli_writes_a_checked_graph_with_progress(tmp_path: Path, capsys):
    """Default weights are the shipped ones (what the node serves), said in the output; the graph
    then computes what the shipped model computes. Random weights only on request."""
    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    out = tmp_path / 'lite.onnx'
    args = parser.parse_args(['--model', 'lite', '--precision', 'fp32', '--out', str(out)])
    assert export_cli.run(args) == 0
    text = capsys.readouterr().out
    for step in ('weights: the shipped lite_synth.ckpt', 'building model lite', 'loading checkpoint', 'tracing',
                 'checking', 'saving', 'occ_label'):
        assert step in text, text
    from occ_ros.weights import default_checkpoint
    shipped = load_model('lite', default_checkpoint('lite'), lambda s: None)
    inputs = dep.example_inputs(shipped.cfg, seed=3)
    with torch.no_grad():
        want = DeployModule(shipped, 'fp32').run(inputs)[ios.OCC_LABEL]
    assert torch.equal(run_ort(out, inputs)[ios.OCC_LABEL], want)         # the graph holds the shipped weights
    assert export_cli.run(parser.parse_args(['--model', 'lite', '--random-weights', '--out',
                                             str(tmp_path / 'r.onnx')])) == 0
    assert 'RANDOM' in capsys.readouterr().out
    with pytest.raises(ConfigError, match='no shipped weights'):
        export_cli.run(parser.parse_args(['--model', 'pano-tiny', '--out', str(tmp_path / 'p.onnx')]))
    spec = ios.onnx_io_spec(out)
    assert spec.input_names == ios.engine_io_spec(build_model('lite').cfg).input_names
    assert ios.CAM_VEC not in spec.input_names                          # plain LSS: no camera vector
    with pytest.raises(ConfigError, match='opset'):
        export_cli.run(parser.parse_args(['--model', 'lite', '--out', str(out), '--opset', '21']))
    assert not list(tmp_path.glob('.*.tmp'))


def test_ensure_onnx_reuses_its_export_and_tracks_weights(tmp_path: Path):
    model = build_model('lite').eval()
    first = ex.ensure_onnx(model, precision='fp32', directory=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert ex.ensure_onnx(model, precision='fp32', directory=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp                             # reused, not re-exported
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    second = ex.ensure_onnx(model, precision='fp32', directory=tmp_path)
    assert second != first and second.exists()


def test_a_reused_export_is_checked_from_its_io_record_without_onnx(tmp_path: Path):
    """The export writes `<graph>.onnx.io.json` (the I/O that `onnx` reads from the graph, with the
    size and SHA-256 of the bytes). A fresh interpreter reusing the export checks the contract from
    it and never imports `onnx`; a record of other bytes is ignored and the graph is read again."""
    import subprocess
    import sys

    from occ_ros.backends.io_record import io_record_path, recorded_io_spec

    model = build_model('lite').eval()
    path = ex.ensure_onnx(model, precision='fp32', directory=tmp_path)
    record = json.loads(io_record_path(path).read_text())
    assert record['size'] == path.stat().st_size
    assert recorded_io_spec(path) == ios.onnx_io_spec(path)           # onnx's own reading of the graph
    torch.save(model.state_dict(), tmp_path / 'weights.pt')
    code = ('import sys, torch\n'
            'from occ_ros.model import build_model\n'
            'from occ_ros.backends.export import ensure_onnx\n'
            'model = build_model("lite").eval()\n'
            f'model.load_state_dict(torch.load({str(tmp_path / "weights.pt")!r}))\n'
            f'print(ensure_onnx(model, precision="fp32", directory={str(tmp_path)!r}), "onnx" in sys.modules)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, check=True)
    reused, imported = out.stdout.split()
    assert Path(reused) == path and imported == 'False'
    record['sha256'] = '0' * 64                                          # a record of other bytes
    io_record_path(path).write_text(json.dumps(record))
    assert recorded_io_spec(path) is None
    stamp = path.stat().st_mtime_ns
    assert ex.ensure_onnx(model, precision='fp32', directory=tmp_path) == path
    assert path.stat().st_mtime_ns == stamp                              # the graph read again, still valid
    assert recorded_io_spec(path) == ios.onnx_io_spec(path)            # and the record rewritten


def test_check_exported_rejects_a_broken_contract():
    model = build_model('lite').eval()
    proto = export_model_proto(model, 'fp32', progress=lambda s: None)
    proto.graph.output[0].name = 'labels'                                # rename an output
    with pytest.raises(BackendError):
        checks.check_exported(proto, model.cfg)


# ---- fp16 numerics ---------------------------------------------------------------------------------
# Ops whose fp16 result overflows for moderate inputs: exp(x) > 65504 (the largest IEEE 754
# binary16 value) as soon as x > ln(65504) ≈ 11.09.
EXP_FAMILY = {'Exp', 'Softplus', 'Pow', 'Log', 'Softmax', 'LogSoftmax', 'ReduceLogSumExp'}


def test_fp16_overflow_threshold_is_ieee_binary16() -> None:
    """The reference for the scan below: numpy's float16 is IEEE 754 binary16."""
    import math

    import numpy as np
    assert float(np.finfo(np.float16).max) == 65504.0
    with np.errstate(over='ignore'):
        assert np.isinf(np.exp(np.float16(11.2))) and np.isfinite(np.exp(np.float16(11.0)))
    assert 11.0 < math.log(65504.0) < 11.2


@pytest.mark.parametrize('name', PARITY_MODELS)
def test_fp16_graph_has_no_exp_family_op_in_half(name: str, exported):
    """Every exp-family node of the strongly typed fp16 graph reads float32 — the occupancy head's
    Softplus (official bev_occ_head.py l.324) included, whose inputs reach 11.09–20 on real frames
    (TensorRT would compute it in fp16 as typed; ONNX Runtime hides it by upcasting)."""
    _, paths = exported(name)
    model = onnx.load(str(paths['fp16']))
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    found = [(n.op_type, types.get(n.input[0])) for n in model.graph.node if n.op_type in EXP_FAMILY]
    assert any(op == 'Softplus' for op, _ in found)
    half = [op for op, t in found if t != onnx.TensorProto.FLOAT]
    assert not half, f'{name}: exp-family ops on non-float32 inputs: {half}'


def test_shipped_lite_fp16_graph_is_finite_and_agrees_on_a_rendered_frame(tmp_path: Path) -> None:
    """The shipped lite on a rendered frame set: its Softplus inputs do exceed the fp16 exp limit
    (so the fp32 island matters), and the fp16 graph (ONNX Runtime) gives finite outputs and the
    fp32 graph's labels on ≥ 99.5 % of the voxels."""
    import onnxruntime as ort

    from occ_ros.bag.synth import SyntheticSequence
    from occ_ros.pipeline import OccupancyPipeline
    from occ_ros.weights import default_checkpoint
    seq = SyntheticSequence(4242, seconds=0.5, rate=2.0, image_hw=(450, 800), ground_truth=False)
    pipe = OccupancyPipeline.from_params('lite', rig=seq.rig, backend='torch', threads=2)
    try:
        inputs, _ = pipe.network_inputs(seq.frame(0).frame_set(seq.rig))
    finally:
        pipe.close()
    model = load_model('lite', default_checkpoint('lite'), lambda s: None)
    seen: list[torch.Tensor] = []
    softplus = next(m for m in model.modules() if isinstance(m, nn.Softplus))
    hook = softplus.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        DeployModule(model, 'fp32').run(inputs)
    hook.remove()
    frac = float((seen[0] > 11.09).double().mean())
    assert frac > 0.001, f'share of Softplus inputs above ln(65504): {frac:.4f}'
    outs = {}
    for p in ('fp32', 'fp16'):
        path = export_onnx(model, tmp_path / f'lite.{p}.onnx', p, progress=lambda s: None)
        sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        feeds = {i.name: inputs[i.name].numpy() for i in sess.get_inputs()}
        outs[p] = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for k, v in outs['fp16'].items():
        if v.dtype.kind == 'f':
            assert torch.isfinite(torch.from_numpy(v)).all(), k
    agree = (outs['fp16'][ios.OCC_LABEL] == outs['fp32'][ios.OCC_LABEL]).mean()
    assert agree >= 0.995, agree


def test_fp16_deploy_module_keeps_softplus_in_float32() -> None:
    deploy = DeployModule(build_model('lite'), 'fp16')
    islands = [m for m in deploy.modules() if isinstance(m, dep._Fp32Island) and isinstance(m.module, nn.Softplus)]
    assert islands
    x = torch.tensor([15.0, -3.0, 0.0], dtype=torch.float16)
    y = islands[0](x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert y[0].item() == pytest.approx(15.0, abs=0.02) and y[2].item() == pytest.approx(0.6931, abs=1e-3)

"""Backends behind one protocol: selection, I/O contract, torch ≡ onnxruntime, CUDA-only paths.

Tests that need a CUDA GPU or a TensorRT runtime skip with a reason saying so; this machine has
neither (its `tensorrt` import, if any, is the type-stub package only).
"""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from occ_ros.backends import io_spec as ios
from occ_ros.backends.factory import (Availability, InferenceBackend, create_backend,
                                   probe_availability, select_backend_kind)
from occ_ros.backends.deploy import example_inputs
from occ_ros.backends.export import export_onnx
from occ_ros.backends.io_spec import IOSpec, TensorSpec, engine_io_spec, onnx_io_spec
from occ_ros.backends.ort_backend import CPU_EP, CUDA_EP, TRT_EP, OrtBackend, default_providers
from occ_ros.backends.torch_backend import TorchBackend
from occ_ros.core.errors import BackendError, ConfigError
from occ_ros.geometry import compute_bev_geometry, nuscenes_rig
from occ_ros.model import MODEL_NAMES, build_model, model_config

AVAIL = probe_availability()
needs_cuda_trt = pytest.mark.skipif(not (AVAIL.cuda and AVAIL.tensorrt),
                                    reason='needs a CUDA GPU and the TensorRT runtime: '
                                           f'{AVAIL.cuda_reason}; {AVAIL.tensorrt_reason}')
needs_cuda = pytest.mark.skipif(not AVAIL.cuda, reason=f'needs a CUDA GPU: {AVAIL.cuda_reason}')


def avail(trt=False, cuda=False, ort=False) -> Availability:
    return Availability(trt, 'tensorrt: TRT-REASON', cuda, 'CUDA-REASON', ort, 'ORT-REASON')


# ---- selection ---------------------------------------------------------------------------------
@pytest.mark.parametrize('trt,cuda,ort,expected', [
    (True, True, True, 'tensorrt'),
    (True, False, True, 'onnxruntime'),          # TensorRT without a GPU is no use
    (False, True, True, 'onnxruntime'),
    (False, False, True, 'onnxruntime'),
    (True, True, False, 'tensorrt'),
    (False, True, False, 'torch'),
    (False, False, False, 'torch'),
])
def test_auto_prefers_tensorrt_then_onnxruntime_then_torch(trt, cuda, ort, expected):
    assert select_backend_kind('auto', avail(trt, cuda, ort)) == expected


def test_explicit_choices_that_cannot_run_say_why():
    with pytest.raises(BackendError, match='tensorrt backend requested but tensorrt: TRT-REASON'):
        select_backend_kind('tensorrt', avail(trt=False, cuda=True, ort=True))
    with pytest.raises(BackendError, match='CUDA-REASON'):
        select_backend_kind('tensorrt', avail(trt=True, cuda=False, ort=True))
    with pytest.raises(BackendError, match='ORT-REASON'):
        select_backend_kind('onnxruntime', avail())
    assert select_backend_kind('torch', avail()) == 'torch'
    with pytest.raises(ConfigError, match="unknown backend 'trt'.*auto, torch, onnxruntime, tensorrt"):
        select_backend_kind('trt', avail(True, True, True))


def test_this_machine_auto_is_onnxruntime_and_tensorrt_is_refused_with_install_advice():
    if AVAIL.tensorrt and AVAIL.cuda:
        pytest.skip('this machine has TensorRT and CUDA')
    assert AVAIL.onnxruntime
    assert select_backend_kind('auto', AVAIL) == 'onnxruntime'
    with pytest.raises(BackendError) as err:
        create_backend('tensorrt', model=build_model('lite'))
    msg = str(err.value)
    assert msg.startswith('tensorrt backend requested but')
    assert 'pip install tensorrt' in msg or 'CUDA' in msg


def test_create_backend_argument_errors():
    with pytest.raises(ConfigError, match='unknown backend'):
        create_backend('tpu')
    with pytest.raises(ConfigError, match='pass model='):
        create_backend('torch')
    with pytest.raises(ConfigError, match='precision'):
        create_backend('torch', model=build_model('lite'), precision='int8')
    with pytest.raises(ConfigError, match='onnx_path'):
        create_backend('onnxruntime', availability=avail(ort=True))


def test_onnxruntime_providers():
    assert default_providers(torch.device('cpu'), [CPU_EP]) == [CPU_EP]
    with pytest.raises(BackendError, match='onnxruntime-gpu'):
        default_providers(torch.device('cuda', 0), [CPU_EP])
    assert default_providers(torch.device('cuda', 0), [TRT_EP, CUDA_EP, CPU_EP]) == [CUDA_EP, CPU_EP]
    assert default_providers(torch.device('cuda', 1), [TRT_EP, CUDA_EP, CPU_EP], True) == [TRT_EP, CUDA_EP, CPU_EP]
    with pytest.raises(ConfigError):
        default_providers(torch.device('meta'), [CPU_EP])


# ---- I/O contract ------------------------------------------------------------------------------
def test_io_spec_from_an_onnx_graph(tmp_path: Path):
    inputs = [helper.make_tensor_value_info('img', TensorProto.FLOAT, [1, 6, 3, 8, 16]),
              helper.make_tensor_value_info('idx', TensorProto.INT64, [40]),
              helper.make_tensor_value_info('w', TensorProto.FLOAT, [1])]      # initializer listed as input
    outputs = [helper.make_tensor_value_info('lab', TensorProto.INT32, [1, 2, 3]),
               helper.make_tensor_value_info('half', TensorProto.FLOAT16, [4]),
               helper.make_tensor_value_info('mask', TensorProto.BOOL, [5])]
    graph = helper.make_graph([], 'g', inputs, outputs, [helper.make_tensor('w', TensorProto.FLOAT, [1], [1.0])])
    path = tmp_path / 'g.onnx'
    onnx.save(helper.make_model(graph), str(path))
    spec = onnx_io_spec(path)
    assert spec.inputs == (TensorSpec('img', (1, 6, 3, 8, 16), torch.float32),
                           TensorSpec('idx', (40,), torch.int64))
    assert spec.outputs == (TensorSpec('lab', (1, 2, 3), torch.int32), TensorSpec('half', (4,), torch.float16),
                            TensorSpec('mask', (5,), torch.bool))
    assert spec.input('idx').nbytes == 320 and spec.output('half').nbytes == 8
    dyn = helper.make_graph([], 'd', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', 3])],
                            [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', 3])])
    with pytest.raises(BackendError, match="dynamic dimension 'n'"):
        onnx_io_spec(helper.make_model(dyn))


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_engine_io_spec_follows_the_config(name: str):
    cfg = model_config(name)
    spec = engine_io_spec(cfg)
    ny, nx = cfg.grid.bev_shape
    assert spec.input(ios.IMG).shape == (1, cfg.num_cameras, 3, *cfg.image.input_hw)
    assert spec.input(ios.POOL_DEPTH_IDX).shape == (cfg.pool_bounds.total_slots,)
    assert spec.input(ios.POOL_CELL_ROW).shape == (ny * nx,)
    assert (ios.CAM_VEC in spec.input_names) == (cfg.depthnet == 'bevdepth')
    # multi-frame models: the lift (default) takes each history frame's neck features and tables
    assert (ios.HIST_IMG_FEAT in spec.input_names) == (ios.IMG_FEAT in spec.output_names) == (cfg.num_frames > 1)
    assert ios.BEV_HISTORY not in spec.input_names and ios.BEV_FEAT not in spec.output_names
    warp = engine_io_spec(cfg, 'warp')
    assert (ios.BEV_HISTORY in warp.input_names) == (ios.BEV_FEAT in warp.output_names) == (cfg.num_frames > 1)
    assert ios.HIST_IMG_FEAT not in warp.input_names
    if cfg.num_frames > 1:
        h, (fh, fw) = cfg.num_frames - 1, cfg.feature_hw
        assert warp.input(ios.BEV_HISTORY).shape == (1, cfg.context_channels * h, ny, nx)
        assert spec.input(ios.HIST_IMG_FEAT).shape == (h, cfg.num_cameras, cfg.neck_out_channels, fh, fw)
        assert spec.input(ios.HIST_POOL_DEPTH_IDX).shape == (h, cfg.pool_bounds.total_slots)
        assert spec.input(ios.HIST_POOL_CELL_ROW).shape == (h, ny * nx)
        assert spec.input(ios.HIST_CAM_VEC).shape == (h, cfg.num_cameras, 27)
        assert spec.output(ios.IMG_FEAT).shape == (1, cfg.num_cameras, cfg.neck_out_channels, fh, fw)
        for s in (spec, warp):
            assert s.input(ios.HISTORY_VALID).shape == (h,)
    else:
        assert warp == spec
    assert spec.output(ios.OCC_LABEL) == TensorSpec(ios.OCC_LABEL, (1, nx, ny, cfg.grid.nz), torch.int32)
    assert (ios.HEATMAP in spec.output_names) == cfg.panoptic
    if cfg.panoptic:
        assert spec.output(ios.HEATMAP).shape == (1, cfg.num_det_classes, ny, nx)


def test_input_checks_name_the_problem():
    spec = IOSpec((TensorSpec('img', (1, 2), torch.float32), TensorSpec(ios.POOL_CELL_ROW, (3,), torch.int64)), ())
    good = {'img': torch.zeros(1, 2), ios.POOL_CELL_ROW: torch.zeros(3, dtype=torch.int64)}
    spec.check_inputs(good)
    spec.check_inputs({**good, ios.CAM_VEC: torch.zeros(1)})        # contract input this engine lacks: ignored
    with pytest.raises(BackendError, match="missing \\['img'\\]"):
        spec.check_inputs({ios.POOL_CELL_ROW: good[ios.POOL_CELL_ROW]})
    with pytest.raises(BackendError, match="unexpected \\['imgs'\\]"):
        spec.check_inputs({**good, 'imgs': torch.zeros(1)})
    with pytest.raises(BackendError, match='shape \\(2, 2\\).*expects \\(1, 2\\)'):
        spec.check_inputs({**good, 'img': torch.zeros(2, 2)})
    with pytest.raises(BackendError, match='dtype torch.int32'):
        spec.check_inputs({**good, ios.POOL_CELL_ROW: torch.zeros(3, dtype=torch.int32)})


@pytest.mark.parametrize('allow, entry', [(None, '0'), (True, '1'), (False, '0')])
def test_onnxruntime_thread_spinning_is_set_on_both_pools(tmp_path: Path, allow, entry):
    """The keys are ONNX Runtime's own (onnxruntime_session_options_config_keys.h:
    kOrtSessionOptionsConfigAllowIntraOpSpinning "session.intra_op.allow_spinning", and the
    inter_op one); None is occ_ros's default, off (core.config.DEFAULT_ORT_SPINNING), written
    explicitly since ONNX Runtime's own is on."""
    graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [4])])
    path = tmp_path / 'relu.onnx'
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    with OrtBackend(path, device='cpu', allow_spinning=allow) as b:
        opts = b._session.get_session_options()
        for pool in ('intra_op', 'inter_op'):
            assert opts.get_session_config_entry(f'session.{pool}.allow_spinning') == entry
        assert b.infer({'x': torch.tensor([-1.0, 0.0, 2.0, -3.0])})['y'].tolist() == [0.0, 0.0, 2.0, 0.0]



# ---- torch ≡ onnxruntime ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def lite_setup(tmp_path_factory):
    torch.manual_seed(3)
    model = build_model('lite').eval()
    geo = compute_bev_geometry(model.cfg, nuscenes_rig(), fast_path=False)
    inputs = example_inputs(model.cfg, seed=5)
    inputs[ios.POOL_DEPTH_IDX], inputs[ios.POOL_FEAT_IDX], inputs[ios.POOL_CELL_ROW] = geo.pool_index.tensors()
    inputs[ios.CAM_VEC] = geo.cam_vec.float()       # not an input of lite: the backends must ignore it
    return model, inputs, tmp_path_factory.mktemp('engines')


def test_torch_and_onnxruntime_backends_agree(lite_setup):
    model, inputs, cache_dir = lite_setup
    with create_backend('torch', model=model, device='cpu') as tb, \
            create_backend('auto', model=model, engine_dir=cache_dir, threads=2) as ob:
        assert isinstance(tb, TorchBackend) and isinstance(ob, OrtBackend)
        assert isinstance(tb, InferenceBackend) and isinstance(ob, InferenceBackend)
        assert tb.input_spec() == ob.input_spec() and tb.output_spec() == ob.output_spec()
        assert tb.output_names == ob.output_names == engine_io_spec(model.cfg).output_names
        assert ob.providers == (CPU_EP,)
        a, b = tb.infer(inputs), ob.infer(inputs)
    assert tb.closed and ob.closed
    for s in tb.output_spec():
        assert a[s.name].shape == b[s.name].shape == s.shape and a[s.name].dtype == b[s.name].dtype == s.dtype
        assert a[s.name].device.type == b[s.name].device.type == 'cpu'
        if s.name == ios.OCC_LABEL:
            assert (a[s.name] == b[s.name]).double().mean() >= 0.999
        else:
            scale = a[s.name].abs().max().item()
            assert (a[s.name] - b[s.name]).abs().max().item() <= 1e-3 + 1e-5 * scale, s.name
    assert list(cache_dir.glob('lite.fp32.*.onnx'))                 # exported once into the cache dir


def test_closed_backends_refuse_work_and_bad_inputs_are_rejected(lite_setup):
    model, inputs, cache_dir = lite_setup
    backend = create_backend('onnxruntime', model=model, engine_dir=cache_dir)
    with pytest.raises(BackendError, match='shape'):
        backend.infer({**inputs, ios.IMG: inputs[ios.IMG][:, :3]})
    with pytest.raises(BackendError, match='missing'):
        backend.infer({k: v for k, v in inputs.items() if k != ios.POOL_FEAT_IDX})
    backend.close()
    with pytest.raises(BackendError, match='closed'):
        backend.infer(inputs)
    assert 'closed' in repr(backend)


def test_torch_backend_bf16_autocast_on_cpu(lite_setup):
    model, inputs, _ = lite_setup
    with TorchBackend(model, device='cpu', autocast_bf16=True) as tb:
        out = tb.infer(inputs)
    with TorchBackend(model, device='cpu') as ref_backend:
        ref = ref_backend.infer(inputs)
    for s in tb.output_spec():
        assert out[s.name].dtype == s.dtype and out[s.name].shape == s.shape
    assert (out[ios.OCC_LABEL] == ref[ios.OCC_LABEL]).double().mean() > 0.5    # bf16: close, not exact
    with pytest.raises(ConfigError, match='CPU option'):
        TorchBackend(model, device='cuda', autocast_bf16=True)


def test_missing_onnx_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(BackendError, match='occ-ros export'):
        OrtBackend(tmp_path / 'none.onnx')


# ---- CUDA / TensorRT -------------------------------------------------------------------------------
@needs_cuda
def test_onnxruntime_on_cuda_returns_cuda_tensors(lite_setup):
    model, inputs, cache_dir = lite_setup
    if CUDA_EP not in __import__('onnxruntime').get_available_providers():
        pytest.skip('needs onnxruntime-gpu (CUDA execution provider)')
    with create_backend('onnxruntime', model=model, engine_dir=cache_dir, device='cuda') as ob, \
            create_backend('torch', model=model, device='cpu') as tb:
        got, ref = ob.infer(inputs), tb.infer(inputs)
    assert all(t.is_cuda for t in got.values())
    assert (got[ios.OCC_LABEL].cpu() == ref[ios.OCC_LABEL]).double().mean() >= 0.999


@needs_cuda_trt
def test_tensorrt_backend_matches_onnxruntime(lite_setup, tmp_path: Path):
    from occ_ros.backends.tensorrt_backend import TensorRTBackend

    model, inputs, cache_dir = lite_setup
    with create_backend('onnxruntime', model=model, engine_dir=cache_dir) as ob:
        ref = ob.infer(inputs)
        onnx_path = next(cache_dir.glob('lite.fp32.*.onnx'))
    with TensorRTBackend(onnx_path, engine_dir=tmp_path) as trt_backend:
        got = trt_backend.infer({k: v.cuda() for k, v in inputs.items()})
        assert all(t.is_cuda for t in got.values())
        again = TensorRTBackend(onnx_path, engine_dir=tmp_path)       # cache hit
        again.close()
    assert (got[ios.OCC_LABEL].cpu() == ref[ios.OCC_LABEL]).double().mean() >= 0.999
    assert len(list(tmp_path.glob('*.engine'))) == 1 and len(list(tmp_path.glob('timing-*.cache'))) == 1


@needs_cuda_trt
def test_tensorrt_fp16_engine_of_the_shipped_lite_matches_onnxruntime_fp32(tmp_path: Path):
    """The acceptance test of the first person with a GPU: the strongly typed fp16 engine of the
    shipped lite (Softplus and the other exp-family ops in fp32, TF32 off) against ONNX Runtime
    fp32 on a rendered frame set: every output finite, ≥ 99.5 % equal labels."""
    from occ_ros.backends.tensorrt_backend import TensorRTBackend
    from occ_ros.bag.synth import SyntheticSequence
    from occ_ros.model.loading import load_model
    from occ_ros.pipeline import OccupancyPipeline
    from occ_ros.weights import default_checkpoint

    seq = SyntheticSequence(4242, seconds=1.0, rate=2.0, image_hw=(450, 800), ground_truth=False)
    pipe = OccupancyPipeline.from_params('lite', rig=seq.rig, backend='torch', threads=2)
    try:
        frames = [pipe.network_inputs(seq.frame(i).frame_set(seq.rig))[0] for i in range(len(seq))]
    finally:
        pipe.close()
    model = load_model('lite', default_checkpoint('lite'), lambda s: None)
    fp16 = export_onnx(model, tmp_path / 'lite.fp16.onnx', 'fp16', progress=lambda s: None)
    with create_backend('onnxruntime', model=model, engine_dir=tmp_path, precision='fp32') as ob, \
            TensorRTBackend(fp16, engine_dir=tmp_path) as tb:
        for inputs in frames:
            ref = ob.infer(inputs)
            got = tb.infer({k: v.cuda() for k, v in inputs.items()})
            for name, t in got.items():
                if t.is_floating_point():
                    assert torch.isfinite(t).all(), name
            agree = (got[ios.OCC_LABEL].cpu() == ref[ios.OCC_LABEL]).double().mean()
            assert agree >= 0.995, agree


# ---- benchmark -----------------------------------------------------------------------------------
@pytest.mark.parametrize('backend,stages', [
    ('torch', {'preprocess', 'image_encoder', 'depth_net', 'bev_pool', 'bev_encoder', 'heads',
               'labels', 'postprocess', 'total'}),
    ('onnxruntime', {'preprocess', 'engine', 'postprocess', 'total'}),
])
def test_bench_reports_every_stage(backend, stages, tmp_path: Path, capsys):
    import argparse
    import json

    from occ_ros.apps import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(['--backend', backend, '--model', 'lite', '--frames', '2', '--warmup', '0',
                              '--threads', '1', '--engine-dir', str(tmp_path), '--json'])
    assert bench.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report['stages']) == stages
    for s in report['stages'].values():
        assert 0 < s['median_ms'] <= s['p90_ms']
    total = report['stages']['total']['median_ms']
    parts = sum(v['median_ms'] for k, v in report['stages'].items() if k != 'total')
    assert parts <= total * 1.05 + 1.0                  # stages are inside the frame
    assert report['fps'] == pytest.approx(1000 / total, rel=1e-9)     # unrounded, any machine speed
    assert report['frames'] == 2 and report['peak_rss_mb'] > 100 and report['gpu_peak_mb'] is None
    # speed against the machine's own limit, measured in the same run (#18)
    assert report['machine']['matmul_gflops'] > 1 and report['machine']['memory_gbps'] > 0.1
    assert 20 < report['network']['gflop_per_frame'] < 35                 # lite: ≈ 25 GFLOP (flop counter)
    assert 0 < report['network']['fraction_of_matmul_rate'] < 2
    assert '% of this machine' in bench.format_report(report)
    text = bench.format_report(report)
    assert 'median ms' in text and 'FPS' in text and all(name in text for name in stages)


def test_bench_helpers():
    from occ_ros.apps import bench

    imgs = bench.synthetic_images([(90, 160)] * 6, seed=1)
    assert len(imgs) == 6 and imgs[0].shape == (90, 160, 3) and imgs[0].dtype.name == 'uint8'
    assert not (imgs[0] == imgs[1]).all()
    assert all((a == b).all() for a, b in zip(imgs, bench.synthetic_images([(90, 160)] * 6, seed=1)))
    assert bench.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    with pytest.raises(ConfigError):
        bench.run_benchmark('lite', 'tpu')


def test_io_spec_reordering_for_engines_that_list_tensors_differently():
    a = TensorSpec('a', (1,), torch.float32)
    b = TensorSpec('b', (2,), torch.int64)
    c = TensorSpec('c', (3,), torch.int32)
    onnx_order = IOSpec((a, b), (c,))
    engine_order = IOSpec((b, a), (c,))
    assert ios.same_contract(engine_order, onnx_order)                  # order matters …
    assert engine_order.ordered_like(onnx_order) == onnx_order          # … and can be restored
    assert not ios.same_contract(engine_order.ordered_like(onnx_order), onnx_order)
    other = IOSpec((a, TensorSpec('b', (2,), torch.int32)), (c,))
    assert ios.same_contract(other, onnx_order) == ['input b (2,) int32 != b (2,) int64']

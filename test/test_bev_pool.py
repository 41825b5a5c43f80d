"""The bucketed padded-gather BEV pool and its sparse fast path, against per-point references.

Tolerances: depth probabilities (softmax, ≤ 1) times features of order 1; pooled values are at
most a few units, and the fp32 pool must stay within 1e-5 absolute of a float64 per-point sum.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from occ_ros import geometry as G
from occ_ros.core.config import DepthBins, ModelConfig, PoolBounds
from occ_ros.core.errors import CalibrationError
from occ_ros.model.bev_pool import (BevPoolIndex, bev_pool, bev_pool_fast, build_bev_pool_index,
                                    required_capacities)

# torch's one-time "sparse CSR is beta" notice (the library filters it; pytest resets filters)
pytestmark = pytest.mark.filterwarnings('ignore:Sparse CSR tensor support is in beta')


def loop_reference(depth: np.ndarray, feat: np.ndarray, rd, rf, rb, bev_hw) -> np.ndarray:
    """Plain per-point loop in float64: out[b, :, cell] += depth[b, rd] · feat[b, rf, :]."""
    b, c = depth.shape[0], feat.shape[-1]
    d = depth.reshape(b, -1).astype(np.float64)
    f = feat.reshape(b, -1, c).astype(np.float64)
    out = np.zeros((b, c, bev_hw[0] * bev_hw[1]))
    for bi in range(b):
        for i, j, k in zip(rd, rf, rb):
            out[bi, :, k] += d[bi, i] * f[bi, j]
    return out.reshape(b, c, *bev_hw)


def add_at_reference(depth: np.ndarray, feat: np.ndarray, rd, rf, rb, bev_hw) -> np.ndarray:
    """The same per-point accumulation, unbuffered (np.add.at) for large point sets."""
    b, c = depth.shape[0], feat.shape[-1]
    out = np.zeros((b, bev_hw[0] * bev_hw[1], c))
    for bi in range(b):
        contrib = depth.reshape(b, -1)[bi, rd, None].astype(np.float64) * \
            feat.reshape(b, -1, c)[bi, rf].astype(np.float64)
        np.add.at(out[bi], rb, contrib)
    return out.transpose(0, 2, 1).reshape(b, c, *bev_hw)


def random_geometry(seed: int, n=2, d=20, fh=3, fw=4, bev_hw=(8, 8), m=300):
    g = torch.Generator().manual_seed(seed)
    size, cells = n * d * fh * fw, bev_hw[0] * bev_hw[1]
    rd = torch.randperm(size, generator=g)[:m]                    # distinct frustum points
    rf = (rd // (d * fh * fw)) * (fh * fw) + rd % (fh * fw)        # their pixels
    # skewed cell choice: a few crowded cells, many sparse ones, some empty
    rb = (torch.rand(m, generator=g) ** 3 * cells).long()
    return rd, rf, rb, (n, d, fh, fw), bev_hw


def inputs(shape, c: int, b: int = 1, seed: int = 0):
    n, d, fh, fw = shape
    g = torch.Generator().manual_seed(seed)
    depth = torch.randn(b, n, d, fh, fw, generator=g).softmax(2)
    feat = torch.randn(b, n, fh, fw, c, generator=g)
    return depth, feat


def fitting_bounds(rb: torch.Tensor, cells: int, extra: int = 0) -> PoolBounds:
    cnt = torch.bincount(rb, minlength=cells)
    nb = int(cnt.max() - 1).bit_length() + 1
    need = required_capacities(rb, cells, nb)
    return PoolBounds(tuple(n + extra for n in need))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_pool_matches_per_point_loop_on_random_geometry(seed: int) -> None:
    rd, rf, rb, shape, bev_hw = random_geometry(seed)
    n, d, fh, fw = shape
    bounds = fitting_bounds(rb, bev_hw[0] * bev_hw[1], extra=seed)   # exact fit and slack
    idx = build_bev_pool_index(rd, rf, rb, n * d * fh * fw, n * fh * fw, bev_hw, bounds,
                               fast_path=True)
    depth, feat = inputs(shape, c=7, b=2, seed=seed)
    ref = loop_reference(depth.numpy(), feat.numpy(), rd.tolist(), rf.tolist(), rb.tolist(),
                         bev_hw)
    out = bev_pool(depth, feat, *idx.tensors(), bounds, bev_hw)
    assert out.shape == (2, 7) + bev_hw and out.dtype == torch.float32
    assert np.abs(out.numpy() - ref).max() <= 1e-5
    fast = bev_pool_fast(depth, feat, idx)
    assert np.abs(fast.numpy() - ref).max() <= 1e-5
    empty = torch.bincount(rb, minlength=bev_hw[0] * bev_hw[1]) == 0
    assert empty.any() and (out.reshape(2, 7, -1)[:, :, empty] == 0).all()
    assert idx.num_points == len(rb) and idx.num_cells == int((~empty).sum())


@pytest.fixture(scope='module')
def nuscenes_geometry():
    cfg = ModelConfig(name='pano-tiny-like', depth=DepthBins(1.0, 45.0, 1.0))
    ranks = G.frustum_ranks(cfg, G.nuscenes_rig())
    geo = G.compute_bev_geometry(cfg, G.nuscenes_rig())
    return cfg, ranks, geo


def test_pool_matches_reference_on_nuscenes_rig(nuscenes_geometry) -> None:
    cfg, ranks, geo = nuscenes_geometry
    shape = (cfg.num_cameras, cfg.depth.n) + cfg.feature_hw
    depth, feat = inputs(shape, c=cfg.context_channels, seed=5)
    ref = add_at_reference(depth.numpy(), feat.numpy(), ranks.ranks_depth, ranks.ranks_feat,
                           ranks.ranks_bev, ranks.bev_hw)
    out = geo.pool_index.pool(depth, feat)
    assert out.shape == (1, cfg.context_channels) + cfg.grid.bev_shape
    err = np.abs(out.numpy() - ref).max()
    assert err <= 1e-5 and np.abs(ref).max() > 0.5                # values of order 1
    fast = geo.pool_index.pool(depth, feat, fast=True)
    assert np.abs(fast.numpy() - ref).max() <= 1e-5


def test_fast_path_equals_gather_path_in_batches(nuscenes_geometry) -> None:
    cfg, _, geo = nuscenes_geometry
    shape = (cfg.num_cameras, cfg.depth.n) + cfg.feature_hw
    depth, feat = inputs(shape, c=16, b=2, seed=9)
    gather = geo.pool_index.pool(depth, feat)
    fast = bev_pool_fast(depth, feat, geo.pool_index)
    torch.testing.assert_close(fast, gather, atol=1e-5, rtol=0)
    # channels-last view like the network's permuted context tensor
    feat_nc = feat.permute(0, 1, 4, 2, 3).contiguous().permute(0, 1, 3, 4, 2)
    torch.testing.assert_close(bev_pool_fast(depth, feat_nc, geo.pool_index), gather,
                               atol=1e-5, rtol=0)


def test_half_precision_inputs_accumulate_in_fp32(nuscenes_geometry) -> None:
    cfg, ranks, geo = nuscenes_geometry
    shape = (cfg.num_cameras, cfg.depth.n) + cfg.feature_hw
    depth, feat = inputs(shape, c=8, seed=11)
    d16, f16 = depth.half(), feat.half()
    out = geo.pool_index.pool(d16, f16)
    assert out.dtype == torch.float16
    # reference on the fp16-quantised inputs in float64: only the final fp16 rounding may differ
    ref = add_at_reference(d16.float().numpy(), f16.float().numpy(), ranks.ranks_depth,
                           ranks.ranks_feat, ranks.ranks_bev, ranks.bev_hw)
    err = np.abs(out.float().numpy() - ref)
    assert (err <= np.abs(ref) * 2.0 ** -11 + 1e-6).all()
    # a naive fp16 accumulation would be visibly worse on crowded cells
    assert err.max() < 2e-3
    fast = geo.pool_index.pool(d16, f16, fast=True)
    assert fast.dtype == torch.float16
    assert (np.abs(fast.float().numpy() - ref) <= np.abs(ref) * 2.0 ** -11 + 1e-5).all()


def test_required_capacities_matches_counting() -> None:
    rb = torch.tensor([0] * 1 + [1] * 2 + [2] * 3 + [3] * 4 + [4] * 5 + [5] * 9 + [6] * 16
                      + [7] * 17)
    # buckets: ≤1, ≤2, ≤4, ≤8, ≤16, ≤32
    assert required_capacities(rb, 10, 6) == [1, 1, 2, 1, 2, 1]
    assert required_capacities(rb, 10, 3) == [1, 1, 2]           # larger cells not counted


def test_spill_over_into_larger_buckets() -> None:
    rd, rf, rb, shape, bev_hw = random_geometry(4)
    n, d, fh, fw = shape
    cells = bev_hw[0] * bev_hw[1]
    need = fitting_bounds(rb, cells).capacities
    # no room for one-point cells: they must spill into bucket 1 and still sum exactly
    moved = (0, need[0] + need[1]) + need[2:]
    idx = build_bev_pool_index(rd, rf, rb, n * d * fh * fw, n * fh * fw, bev_hw,
                               PoolBounds(moved))
    depth, feat = inputs(shape, c=3)
    ref = loop_reference(depth.numpy(), feat.numpy(), rd.tolist(), rf.tolist(), rb.tolist(),
                         bev_hw)
    out = bev_pool(depth, feat, *idx.tensors(), idx.bounds, bev_hw)
    assert np.abs(out.numpy() - ref).max() <= 1e-5
    # but a large cell can never move down
    short = list(need)
    short[-1] -= 1
    short[0] += 100
    with pytest.raises(CalibrationError, match=f'bucket {len(need) - 1} '):
        build_bev_pool_index(rd, rf, rb, n * d * fh * fw, n * fh * fw, bev_hw,
                             PoolBounds(tuple(short)))


def test_overflow_errors_name_the_bound() -> None:
    rd, rf, rb, shape, bev_hw = random_geometry(6)
    n, d, fh, fw = shape
    cells = bev_hw[0] * bev_hw[1]
    need = list(fitting_bounds(rb, cells).capacities)
    args = (rd, rf, rb, n * d * fh * fw, n * fh * fw, bev_hw)
    too_few = [max(0, c - 3) for c in need]
    with pytest.raises(CalibrationError, match=r'bucket \d+ \(cells with \d+\.\.\d+ points\)'
                                               r'.*PoolBounds\(capacities=.*rebuild'):
        build_bev_pool_index(*args, PoolBounds(tuple(too_few)))
    with pytest.raises(CalibrationError, match=r'at most \d+ \(largest bucket 1\): add \d+ '
                                               r'bucket'):
        build_bev_pool_index(*args, PoolBounds((100, 100)))
    with pytest.raises(CalibrationError, match='ranks_bev outside'):
        build_bev_pool_index(rd, rf, rb + cells, *args[3:], PoolBounds(tuple(need)))
    with pytest.raises(CalibrationError, match='ranks_depth outside'):
        build_bev_pool_index(rd + 10_000, rf, rb, *args[3:], PoolBounds(tuple(need)))
    with pytest.raises(CalibrationError, match='same length|one length'):
        build_bev_pool_index(rd[:-1], rf, rb, *args[3:], PoolBounds(tuple(need)))


def test_index_moves_and_fast_tables_are_optional() -> None:
    rd, rf, rb, shape, bev_hw = random_geometry(7)
    n, d, fh, fw = shape
    bounds = fitting_bounds(rb, bev_hw[0] * bev_hw[1])
    idx = build_bev_pool_index(rd, rf, rb, n * d * fh * fw, n * fh * fw, bev_hw, bounds)
    assert isinstance(idx, BevPoolIndex) and idx.fast is None
    assert idx.depth_idx.shape == (bounds.total_slots,) and idx.depth_idx.dtype == torch.int64
    depth, feat = inputs(shape, c=4)
    with pytest.raises(CalibrationError, match='fast_path=True'):
        bev_pool_fast(depth, feat, idx)
    torch.testing.assert_close(idx.pool(depth, feat, fast=True), idx.pool(depth, feat))
    moved = idx.to('cpu')
    assert moved.device.type == 'cpu' and moved.bounds == bounds


@pytest.mark.filterwarnings('ignore::DeprecationWarning')      # the TorchScript exporter's notice
@pytest.mark.filterwarnings('ignore::FutureWarning')           # torch.export internals
@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript', 'dynamo'])
def test_gather_pool_exports_to_plain_onnx_ops(tmp_path, dynamo: bool) -> None:
    """The exported pool uses only TensorRT-native ops and matches eager in onnxruntime."""
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    rd, rf, rb, shape, bev_hw = random_geometry(8)
    n, d, fh, fw = shape
    bounds = fitting_bounds(rb, bev_hw[0] * bev_hw[1], extra=1)
    idx = build_bev_pool_index(rd, rf, rb, n * d * fh * fw, n * fh * fw, bev_hw, bounds)

    class Pool(torch.nn.Module):
        def forward(self, depth, feat, di, fi, cr):
            return bev_pool(depth, feat, di, fi, cr, bounds, bev_hw)

    depth, feat = inputs(shape, c=5)
    path = tmp_path / 'pool.onnx'
    torch.onnx.export(Pool().eval(), (depth, feat, *idx.tensors()), str(path),
                      input_names=['depth', 'feat', 'di', 'fi', 'cr'], output_names=['bev'],
                      opset_version=18 if dynamo else 17, dynamo=dynamo)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    allowed = {'Gather', 'GatherND', 'GatherElements', 'MatMul', 'Concat', 'Reshape',
               'Transpose', 'Cast', 'Constant', 'ConstantOfShape', 'Slice', 'Unsqueeze',
               'Squeeze', 'Shape', 'Expand', 'Mul', 'Add'}
    assert ops <= allowed, ops - allowed
    assert not any(op.startswith(('Scatter', 'CumSum')) for op in ops)
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = sess.run(None, {'depth': depth.numpy(), 'feat': feat.numpy(),
                          'di': idx.depth_idx.numpy(), 'fi': idx.feat_idx.numpy(),
                          'cr': idx.cell_row.numpy()})[0]
    np.testing.assert_allclose(got, idx.pool(depth, feat).numpy(), atol=1e-6, rtol=0)

"""The network: official key names/shapes, parameter counts, shapes, layouts and semantics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from occ_ros.core.config import AxisSpec, GridSpec, ImageGeometry, ModelConfig, PoolBounds
from occ_ros.core.errors import ConfigError
from occ_ros.model import MODEL_NAMES, FlashOcc, build_model, model_config
from occ_ros.model.bev_pool import BevPoolIndex, build_bev_pool_index
from occ_ros.model.heads import HEATMAP_INIT_BIAS, OccHead
from occ_ros.model.necks import CustomFPN
from occ_ros.model.resnet import ResNet

REFERENCE = Path(__file__).resolve().parent / 'data' / 'flashocc_pano_tiny_keys.json'
OFFICIAL_PREFIXES = ('img_backbone.', 'img_neck.', 'img_view_transformer.depth_net.',
                     'img_bev_encoder_backbone.', 'img_bev_encoder_neck.', 'occ_head.',
                     'aux_centerness_head.', 'pre_process_net.')

# Small geometry for structure tests: 32×64 input (2×4 features), non-square 24×32 BEV.
SMALL = dict(
    image=ImageGeometry(input_hw=(32, 64)),
    grid=GridSpec(x=AxisSpec(-6.4, 6.4, 0.4, 'x'), y=AxisSpec(-4.8, 4.8, 0.4, 'y')),
    pool_bounds=PoolBounds((512, 256, 128, 64, 32, 16, 8, 4, 2)),
)

# Narrow widths for behaviour tests (semantics do not depend on width; keeps CI fast).
NARROW = dict(backbone_depth=18, neck_out_channels=64, context_channels=16, aspp_mid_channels=16,
              bev_channels=(16, 32, 64), bev_neck_channels=16, occ_head_channels=16,
              centerness_share_channels=16)


def reference_keys() -> dict[str, tuple[int, ...]]:
    return {e['key']: tuple(e['shape']) for e in json.loads(REFERENCE.read_text())}


def meta_model(name: str, **overrides) -> FlashOcc:
    """Structure only (no memory, no random init): for key, shape and parameter-count tests."""
    with torch.device('meta'):
        return build_model(name, **overrides)


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_pool(cfg: ModelConfig, num_points: int, seed: int = 0
                ) -> tuple[BevPoolIndex, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Random but self-consistent frustum points: the feature row of each point is the pixel of
    its depth entry. Returns the pool index and the raw (ranks_depth, ranks_feat, ranks_bev)."""
    g = torch.Generator().manual_seed(seed)
    n, d = cfg.num_cameras, cfg.depth.n
    fh, fw = cfg.feature_hw
    depth_size = n * d * fh * fw
    rd = torch.randperm(depth_size, generator=g)[:num_points]
    cam, pix = rd // (d * fh * fw), rd % (fh * fw)
    rf = cam * fh * fw + pix
    ny, nx = cfg.grid.bev_shape
    rb = torch.randint(0, ny * nx, (num_points,), generator=g)
    index = build_bev_pool_index(rd, rf, rb, depth_size, n * fh * fw, (ny, nx), cfg.pool_bounds)
    return index, (rd, rf, rb)


def inputs(cfg: ModelConfig, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image.input_hw
    img = torch.randn(batch, cfg.num_cameras, 3, h, w, generator=g)
    cam_vec = torch.randn(batch, cfg.num_cameras, 27, generator=g)
    return img, cam_vec


def small_model(name: str, **extra) -> FlashOcc:
    torch.manual_seed(0)
    return build_model(name, **{**SMALL, **extra}).eval()


# ------------------------------------------------------------------------------ official structure
def test_pano_tiny_state_dict_equals_official_key_list():
    ref = reference_keys()
    sd = {k: tuple(v.shape) for k, v in meta_model('pano-tiny').state_dict().items()}
    assert sorted(set(ref) - set(sd)) == []
    assert sorted(set(sd) - set(ref)) == []
    assert {k: sd[k] for k in ref if sd[k] != ref[k]} == {}
    assert len(sd) == len(ref) == 586


def test_parameter_counts_match_readme():
    # README: tiny 45.32 M, M0 39.94 M, M1 44.74 M (parameters only, BN buffers excluded);
    # reference §3.1: pano-tiny 45.625 M, ResNet-50 trunk 23.508 M.
    assert round(num_params(meta_model('tiny')) / 1e6, 2) == 45.32
    assert round(num_params(meta_model('m0')) / 1e6, 2) == 39.94
    assert round(num_params(meta_model('m1')) / 1e6, 2) == 44.74
    pano_tiny = meta_model('pano-tiny')
    assert round(num_params(pano_tiny) / 1e6, 3) == 45.625
    assert round(num_params(pano_tiny.img_backbone) / 1e6, 3) == 23.508


def test_depth_config_discrepancy_documented():
    # committed panoptic-flashocc-r50-depth.py → 57.83 M; README's 50.12 M = numC_Trans 64.
    assert round(num_params(meta_model('depth')) / 1e6, 2) == 57.83
    narrow = meta_model('depth', context_channels=64, bev_channels=(128, 256, 512))
    assert round(num_params(narrow) / 1e6, 2) == 50.12


def test_resnet18_trunk_is_torchvision_minus_fc():
    # torchvision resnet18 has 11,689,512 parameters, its fc 512·1000 + 1000.
    with torch.device('meta'):
        r18, r18_c4 = ResNet(18, (2, 3)), ResNet(18, (2,))
    assert num_params(r18) == 11_689_512 - 513_000
    assert r18.out_channels == [256, 512]
    assert not hasattr(r18_c4, 'layer4')                      # stages after the last output unbuilt


def test_only_official_prefixes_and_bn_buffers_in_state_dict():
    for name in ('pano-longterm8f', 'm1', 'lite'):
        model = meta_model(name, **SMALL)
        for key in model.state_dict():
            assert key.startswith(OFFICIAL_PREFIXES), key
        for key, _ in model.named_buffers():
            leaf = key.rsplit('.', 1)[1]
            assert leaf in ('running_mean', 'running_var', 'num_batches_tracked'), key


def test_multi_frame_keys_and_widths():
    sd = {k: tuple(v.shape) for k, v in meta_model('pano-4d').state_dict().items()}
    pre = {k: v for k, v in sd.items() if k.startswith('pre_process_net.')}
    stems = {k.rsplit('.', 1)[0] for k in pre}
    assert stems == {f'pre_process_net.layers.0.0.{m}'
                     for m in ('conv1', 'bn1', 'conv2', 'bn2', 'downsample')}
    assert pre['pre_process_net.layers.0.0.downsample.weight'] == (80, 80, 3, 3)
    assert pre['pre_process_net.layers.0.0.downsample.bias'] == (80,)
    assert sd['img_bev_encoder_backbone.layers.0.0.conv1.weight'] == (160, 160, 3, 3)
    assert sd['img_neck.fpn_convs.0.conv.weight'] == (512, 512, 3, 3)
    assert sd['img_view_transformer.depth_net.reduce_conv.0.weight'] == (512, 512, 3, 3)
    assert sd['img_view_transformer.depth_net.depth_conv.4.weight'] == (88, 512, 1, 1)
    assert sd['img_bev_encoder_neck.conv.0.weight'] == (512, 800, 3, 3)
    lt = meta_model('pano-longterm8f').state_dict()
    assert tuple(lt['img_bev_encoder_backbone.layers.0.0.conv1.weight'].shape) == (160, 720, 3, 3)


def test_plain_lss_depth_net_and_v1_head_keys():
    sd = {k: tuple(v.shape) for k, v in meta_model('m1').state_dict().items()}
    assert sd['img_view_transformer.depth_net.weight'] == (88 + 64, 256, 1, 1)
    assert sd['img_view_transformer.depth_net.bias'] == (88 + 64,)
    assert sd['occ_head.final_conv.conv.weight'] == (256, 256, 3, 3)
    assert sd['occ_head.predicter.2.weight'] == (16 * 18, 512)
    assert not any(k.startswith('aux_centerness_head.') for k in sd)


def test_lite_heads_and_heatmap_prior():
    model = build_model('lite')
    heads = {k.split('.')[3] for k in model.state_dict()
             if k.startswith('aux_centerness_head.task_heads.')}
    assert heads == {'reg', 'height', 'heatmap'}
    bias = model.aux_centerness_head.task_heads[0].heatmap[-1].bias
    assert torch.allclose(bias, torch.full_like(bias, HEATMAP_INIT_BIAS))
    cfg = model.cfg
    assert (cfg.grid.nx, cfg.grid.ny, cfg.grid.nz, cfg.num_classes) == (200, 200, 16, 18)
    assert cfg.image.input_hw[0] % 16 == 0 and cfg.image.input_hw[1] % 16 == 0
    assert cfg.image.crop_top >= 0                           # fits under the 900×1600 source


def test_unknown_model_name_lists_the_names():
    with pytest.raises(ConfigError) as err:
        build_model('pano-huge')
    for name in MODEL_NAMES:
        assert name in str(err.value)
    with pytest.raises(ConfigError):
        model_config('tiny', no_such_field=3)
    assert set(MODEL_NAMES) == {'pano-tiny', 'tiny', 'pano-depth', 'depth', 'pano-4d',
                                'pano-longterm8f', 'm0', 'm1', 'lite'}


# ------------------------------------------------------------------------------ forward
def expected_shapes(cfg: ModelConfig, batch: int) -> dict[str, tuple[int, ...]]:
    ny, nx = cfg.grid.bev_shape
    fh, fw = cfg.feature_hw
    shapes = {'occ_logits': (batch, nx, ny, cfg.grid.nz, cfg.num_classes),
              'bev_feat': (batch, cfg.context_channels, ny, nx),
              'depth': (batch, cfg.num_cameras, cfg.depth.n, fh, fw)}
    if cfg.centerness:
        shapes.update(heatmap=(batch, cfg.num_det_classes, ny, nx), reg=(batch, 2, ny, nx),
                      height=(batch, 1, ny, nx))
    return shapes


def test_full_size_pano_tiny_forward_shapes():
    model = build_model('pano-tiny').eval()
    cfg = model.cfg
    index, _ = random_pool(cfg, 8000)
    img, cam_vec = inputs(cfg)
    with torch.inference_mode():
        out = model(img, cam_vec, *index.tensors())
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        'occ_logits': (1, 200, 200, 16, 18), 'heatmap': (1, 10, 200, 200),
        'reg': (1, 2, 200, 200), 'height': (1, 1, 200, 200), 'bev_feat': (1, 64, 200, 200),
        'depth': (1, 6, 44, 16, 44)}
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_forward_shapes_every_config(name):
    model = small_model(name)
    cfg = model.cfg
    index, _ = random_pool(cfg, 600)
    img, cam_vec = inputs(cfg)
    history = None
    if cfg.num_frames > 1:
        history = torch.randn(1, cfg.history_channels, *cfg.grid.bev_shape)
    with torch.inference_mode():
        out = model(img, cam_vec, *index.tensors(), bev_history=history)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected_shapes(cfg, 1)
    assert torch.allclose(out['depth'].sum(2), torch.ones(()), atol=1e-5)   # softmax over D


def test_stage_methods_compose_to_forward():
    model = small_model('pano-4d', **NARROW)
    cfg = model.cfg
    index, _ = random_pool(cfg, 600)
    img, cam_vec = inputs(cfg)
    history = torch.randn(1, cfg.history_channels, *cfg.grid.bev_shape)
    valid = torch.tensor([1.0])
    with torch.inference_mode():
        out = model(img, cam_vec, *index.tensors(), history, valid)
        feats = model.encode_images(img)
        bev, depth = model.view_transform(feats, cam_vec, *index.tensors())
        d2, ctx = model.predict_depth(feats, cam_vec)
        bev2 = model.pool(d2, ctx, *index.tensors())
        cur = model.pre_process(bev)
        heads = model.heads(model.encode_bev(bev, history, valid))
        heads2 = model.heads(model.encode_preprocessed_bev(cur, history, valid))
    assert torch.equal(bev, bev2) and torch.equal(depth, d2)
    assert torch.equal(out['bev_feat'], cur) and torch.equal(out['depth'], depth)
    for k, v in heads.items():
        assert torch.equal(out[k], v) and torch.equal(heads2[k], v), k


def test_view_transform_equals_naive_point_sum():
    model = small_model('pano-tiny', **NARROW)
    cfg = model.cfg
    index, (rd, rf, rb) = random_pool(cfg, 700, seed=3)
    img, cam_vec = inputs(cfg, batch=2, seed=1)
    with torch.inference_mode():
        feats = model.encode_images(img)
        depth, context = model.predict_depth(feats, cam_vec)
        bev, _ = model.view_transform(feats, cam_vec, *index.tensors())
        logits = model.img_view_transformer.depth_logits(feats, cam_vec)
    b, c = 2, cfg.context_channels
    ny, nx = cfg.grid.bev_shape
    d = depth.double().reshape(b, -1)                                  # (B, N·D·fH·fW)
    f = context.double().reshape(b, -1, c)                             # (B, N·fH·fW, C)
    ref = torch.zeros(b, ny * nx, c, dtype=torch.float64)
    ref.index_add_(1, rb, d[:, rd, None] * f[:, rf, :])
    ref = ref.transpose(1, 2).reshape(b, c, ny, nx)                    # rows y, columns x
    assert torch.allclose(bev.double(), ref, atol=1e-5)
    # context is channels-last and equals the depth net's channels D..D+C
    n, (fh, fw) = cfg.num_cameras, cfg.feature_hw
    expect = logits[:, cfg.depth.n:].reshape(b, n, c, fh, fw).permute(0, 1, 3, 4, 2)
    assert torch.equal(context, expect)


def test_history_valid_semantics():
    model = small_model('pano-longterm8f', **NARROW)
    cfg = model.cfg
    f1 = cfg.num_frames - 1
    index, _ = random_pool(cfg, 600)
    img, cam_vec = inputs(cfg)
    ny, nx = cfg.grid.bev_shape
    history = torch.randn(1, cfg.history_channels, ny, nx)
    with torch.inference_mode():
        cur = model(img, cam_vec, *index.tensors())['bev_feat']
        dup = cur.repeat(1, f1, 1, 1)                                   # current in every slot
        none = model(img, cam_vec, *index.tensors(), dup, torch.ones(f1))
        invalid = model(img, cam_vec, *index.tensors(), history, torch.zeros(f1))
        no_history = model(img, cam_vec, *index.tensors())
        full = model(img, cam_vec, *index.tensors(), history, torch.ones(f1))
    for k in ('occ_logits', 'heatmap', 'reg', 'height'):
        assert torch.allclose(invalid[k], none[k], atol=1e-5), k
        assert torch.allclose(no_history[k], none[k], atol=1e-5), k
    assert not torch.allclose(full['occ_logits'], none['occ_logits'], atol=1e-3)
    # mixed validity: slot i takes history where valid, else the current feature
    valid = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    fused = model.fuse_history(cur, history, valid)
    c = cfg.context_channels
    expect = [cur] + [history[:, i * c:(i + 1) * c] if valid[i] else cur for i in range(f1)]
    assert torch.equal(fused, torch.cat(expect, 1))
    with pytest.raises(ConfigError):
        model.fuse_history(cur, history[:, :c], None)


def test_single_frame_model_rejects_history():
    model = small_model('tiny', **NARROW)
    with pytest.raises(ConfigError):
        model.fuse_history(torch.zeros(1, 16, 24, 32), torch.zeros(1, 16, 24, 32), None)


def test_camera_vector_used_only_by_bevdepth_models():
    for name, uses in (('m0', False), ('pano-tiny', True)):
        model = small_model(name, **NARROW)
        index, _ = random_pool(model.cfg, 600)
        img, cam_vec = inputs(model.cfg)
        with torch.inference_mode():
            a = model(img, cam_vec, *index.tensors())['occ_logits']
            b = model(img, cam_vec + 1.0, *index.tensors())['occ_logits']
        assert torch.equal(a, b) != uses, name


def test_eval_mode_is_deterministic():
    model = small_model('pano-tiny', **NARROW)
    index, _ = random_pool(model.cfg, 600)
    img, cam_vec = inputs(model.cfg)
    with torch.inference_mode():
        a = model(img, cam_vec, *index.tensors())
        b = model(img, cam_vec, *index.tensors())
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the ASPP dropout is active in training: repeated train-mode depth differs
    model.train()
    with torch.no_grad():
        feats = model.encode_images(img)
        d1 = model.predict_depth(feats, cam_vec)[0]
        d2 = model.predict_depth(feats, cam_vec)[0]
    assert not torch.equal(d1, d2)


# ------------------------------------------------------------------------------ layouts
def test_occ_head_channel_to_height_layout():
    c, nz, k, ny, nx = 4, 3, 5, 3, 7                                  # non-square on purpose
    head = OccHead(c, c, nz, k).eval()
    with torch.no_grad():
        conv = head.final_conv.conv
        conv.weight.zero_()
        conv.bias.zero_()
        for i in range(c):
            conv.weight[i, i, 1, 1] = 1.0                               # identity 3×3 conv
        lin1, lin2 = head.predicter[0], head.predicter[2]
        lin1.weight.zero_()
        lin1.bias.zero_()
        lin1.weight[0, 0] = 1.0                                         # hidden 0 = channel 0
        lin2.weight.zero_()
        lin2.bias.zero_()
        lin2.weight[:, 0] = torch.arange(1, nz * k + 1, dtype=torch.float32)   # row r → (r+1)·h0
    x = torch.zeros(1, c, ny, nx)
    x[0, 0] = 1.0 + torch.arange(ny * nx, dtype=torch.float32).reshape(ny, nx)  # 1 + y·nx + x
    with torch.no_grad():
        out = head(x)
    assert tuple(out.shape) == (1, nx, ny, nz, k)
    for xi in range(nx):
        for yi in range(ny):
            h0 = F.softplus(torch.tensor(1.0 + yi * nx + xi))
            for z in range(nz):
                for cls in range(k):
                    want = (z * k + cls + 1) * h0
                    assert torch.isclose(out[0, xi, yi, z, cls], want, rtol=1e-5), (xi, yi, z, cls)


def test_custom_fpn_nearest_upsample_and_add():
    torch.manual_seed(0)
    fpn = CustomFPN([3, 5], 4).eval()
    c4, c5 = torch.randn(2, 3, 6, 8), torch.randn(2, 5, 3, 4)
    with torch.no_grad():
        out = fpn([c4, c5])
        lat4 = F.conv2d(c4, fpn.lateral_convs[0].conv.weight, fpn.lateral_convs[0].conv.bias)
        lat5 = F.conv2d(c5, fpn.lateral_convs[1].conv.weight, fpn.lateral_convs[1].conv.bias)
        up = lat5.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)    # nearest ×2
        ref = F.conv2d(lat4 + up, fpn.fpn_convs[0].conv.weight, fpn.fpn_convs[0].conv.bias,
                       padding=1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_real_geometry_drives_pano_tiny():
    from occ_ros import geometry
    model = small_model('pano-tiny', **{**NARROW, 'grid': GridSpec(),
                                        'pool_bounds': PoolBounds(derived=True),
                                        'image': ImageGeometry(input_hw=(128, 352))})
    cfg = model.cfg
    rig = geometry.nuscenes_rig()
    geo = geometry.compute_bev_geometry(cfg, rig)
    assert tuple(geo.cam_vec.shape) == (1, 6, 27)
    img, _ = inputs(cfg)
    with torch.inference_mode():
        depth, context = model.predict_depth(model.encode_images(img), geo.cam_vec.float())
        bev = model.pool(depth, context, *geo.pool_index.tensors())
        occ = model.heads(model.encode_bev(bev))['occ_logits']
    assert tuple(occ.shape) == (1, 200, 200, 16, 18)
    # the pooled BEV equals the per-point sum over the geometry's own frustum ranks
    ranks = geometry.frustum_ranks(cfg, rig)
    rd, rf, rb = (torch.from_numpy(r)
                  for r in (ranks.ranks_depth, ranks.ranks_feat, ranks.ranks_bev))
    c = cfg.context_channels
    ny, nx = cfg.grid.bev_shape
    ref = torch.zeros(ny * nx, c, dtype=torch.float64)
    d = depth.double().reshape(-1)                                    # (N·D·fH·fW,)
    f = context.double().reshape(-1, c)                               # (N·fH·fW, C)
    ref.index_add_(0, rb, d[rd, None] * f[rf])
    assert torch.allclose(bev[0].double(), ref.t().reshape(c, ny, nx), atol=1e-4)
    # the ego sits at the grid centre: the strip straight ahead (+x = columns) receives frustum
    # points, the corners (56 m away, beyond the 45 m frustum) do not
    hits = torch.bincount(rb, minlength=ny * nx).reshape(ny, nx)
    assert (hits[ny // 2 - 2:ny // 2 + 2, nx // 2 + 10:nx // 2 + 40] > 0).sum() > 20
    assert hits[0, 0] == 0 and hits[-1, -1] == 0

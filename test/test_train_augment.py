"""Training-data variety: the BEV flip augmentation and the training world mix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from occ_ros.bag.world import World
from occ_ros.bag.world_mix import WORLD_MIXES, WorldMix, world_mix
from occ_ros.core.classes import OCC_INDEX
from occ_ros.core.config import AxisSpec, GridSpec, PoolBounds
from occ_ros.core.errors import ConfigError
from occ_ros.model import build_from_config, model_config
from occ_ros.model.bev_pool import bev_pool
from occ_ros.train import data as D
from occ_ros.train import loop as T

SRC_HW = (225, 400)


def small_cfg():
    g = GridSpec(x=AxisSpec(-25.6, 25.6, 0.8, 'x'), y=AxisSpec(-25.6, 25.6, 0.8, 'y'))
    return model_config('lite', grid=g,
                        pool_bounds=PoolBounds((110, 140, 360, 2080, 520, 140, 40, 10, 32)))


@pytest.fixture(scope='module')
def cfg_and_samples():
    cfg = small_cfg()
    samples = D.render_sequence((3, D.DataSettings((3,), seconds=2.0, rate=1.0, src_hw=SRC_HW), cfg))
    return cfg, samples


@pytest.mark.parametrize('flip', D.BEV_FLIPS[1:])
def test_flipped_pool_tables_mirror_the_lifted_bev(flip):
    """Lifting with the flip's tables = lifting with the test-time tables, then mirroring —
    except in the outermost cells of a flipped axis: the official truncation toward zero keeps
    points up to one cell *below* the lower edge in cell 0, and their mirror images lie above the
    upper edge and are dropped."""
    cfg = small_cfg()
    ident = T.model_inputs(cfg, SRC_HW)
    flipped = T.model_inputs(cfg, SRC_HW, flip)
    n = len(cfg.cameras)
    fh, fw = cfg.feature_hw
    g = torch.Generator().manual_seed(3)
    depth = torch.rand(1, n, cfg.depth.n, fh, fw, generator=g, dtype=torch.float64)
    feat = torch.rand(1, n, fh, fw, 4, generator=g, dtype=torch.float64)
    bev_hw = cfg.grid.bev_shape
    a = bev_pool(depth, feat, *ident[1:], cfg.pool_bounds, bev_hw)           # (1, C, ny, nx)
    b = bev_pool(depth, feat, *flipped[1:], cfg.pool_bounds, bev_hw)
    dims = [d for d, f in ((3, flip[0]), (2, flip[1])) if f < 0]
    assert not torch.allclose(a, b)                                           # the flip does move things
    inner = [slice(None), slice(None), slice(None), slice(None)]
    for d in dims:
        inner[d] = slice(1, -1)
    torch.testing.assert_close(b[tuple(inner)], a.flip(dims)[tuple(inner)], rtol=1e-9, atol=1e-9)


def test_collate_flip_mirrors_occupancy_and_centre_targets(cfg_and_samples):
    cfg, samples = cfg_and_samples
    s = samples[0]
    base = D.collate([s], cfg)
    assert int(base.center_mask.sum()) >= 1
    for flip in D.BEV_FLIPS[1:]:
        b = D.collate([s], cfg, flip)
        sem_dims = [d for d, f in ((1, flip[0]), (2, flip[1])) if f < 0]       # (B, nx, ny, nz)
        bev_dims = [d for d, f in ((3, flip[0]), (2, flip[1])) if f < 0]       # (B, K, ny, nx)
        assert torch.equal(b.semantics, base.semantics.flip(sem_dims))
        torch.testing.assert_close(b.heatmap, base.heatmap.flip(bev_dims))
        assert torch.equal(b.center_mask, base.center_mask.flip([d - 1 for d in bev_dims]))
        # image-side targets are untouched
        assert torch.equal(b.img, base.img) and torch.equal(b.depth_target, base.depth_target)
    with pytest.raises(ConfigError, match='flip'):
        D.collate([s], cfg, (1, 0))


def test_flip_needs_a_symmetric_grid():
    D.check_flippable(small_cfg().grid)
    lopsided = GridSpec(x=AxisSpec(-20.0, 40.0, 0.4, 'x'))
    with pytest.raises(ConfigError, match='symmetric in x'):
        D.check_flippable(lopsided)


def test_step_flip_is_deterministic_and_covers_every_flip():
    flips = [T.step_flip(5, k) for k in range(200)]
    assert flips == [T.step_flip(5, k) for k in range(200)]
    counts = {f: flips.count(f) for f in D.BEV_FLIPS}
    assert all(25 <= c <= 75 for c in counts.values()), counts
    assert flips != [T.step_flip(6, k) for k in range(200)]


def test_trainer_with_bev_flip_trains_and_resumes_identically(cfg_and_samples):
    cfg, samples = cfg_and_samples
    weights, _ = T.cache_class_weights(samples)
    inputs = T.model_inputs(cfg, SRC_HW)

    def trainer():
        T.seed_everything(11)
        s = T.TrainSettings(steps=6, lr=1e-3, warmup=1, seed=11, lovasz_voxels=2048, bev_flip=True)
        return T.Trainer(build_from_config(cfg), s, samples, weights, inputs, log=lambda _: None,
                         src_hw=SRC_HW)
    used = {T.step_flip(11, k) for k in range(4)}
    assert len(used) >= 2                                     # the run below sees flipped batches
    a = trainer()
    a.train_steps(4)
    b = trainer()
    b.train_steps(2)
    b.train_steps(2)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(ConfigError, match='src_hw'):
        T.Trainer(build_from_config(cfg), T.TrainSettings(bev_flip=True), samples, weights, inputs)


# ----------------------------------------------------------------------------- world mix

def _class_counts(world: World) -> dict[int, int]:
    static = np.bincount(world.static_boxes.cls, minlength=32)
    things = np.bincount([t.class_id for t in world.things], minlength=32)
    return {c: int(static[c] + things[c]) for c in range(32)}


def test_training_mix_has_more_rare_things_and_default_is_the_evaluation_world():
    assert WORLD_MIXES['default'] == WorldMix()
    rare = ('traffic_cone', 'bicycle', 'construction_vehicle')
    tot = {m: {c: 0 for c in rare} for m in ('default', 'training')}
    for seed in range(1, 9):
        for m in tot:
            counts = _class_counts(World(seed, 20.0, world_mix(m)))
            for c in rare:
                tot[m][c] += counts[OCC_INDEX[c]]
    for c in rare:
        assert tot["training"][c] >= 2 * max(1, tot["default"][c]), (c, tot)
    # the default mix is what World() builds: same boxes, same things
    a, b = World(4242, 8.0), World(4242, 8.0, world_mix('default'))
    assert np.array_equal(a.static_boxes.center, b.static_boxes.center)
    assert [t.class_id for t in a.things] == [t.class_id for t in b.things]


def test_world_mix_validation():
    with pytest.raises(ConfigError, match='probability'):
        WorldMix(bike_lane_p=1.5)
    with pytest.raises(ConfigError, match='count range'):
        WorldMix(curb_cones=(5, 5))
    with pytest.raises(ConfigError, match='summing to 1'):
        WorldMix(vehicle_p=(0.5, 0.1, 0.1, 0.1, 0.1, 0.2))
    with pytest.raises(ConfigError, match='unknown world mix'):
        world_mix('nope')

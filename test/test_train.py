"""`occ-ros train`: data cache, determinism, resume, and the shipped default model.

The training-loop tests use a reduced grid (64×64×16 cells of 0.8 m) so a step takes well under
a second; the shipped-checkpoint test uses the real `lite` config on held-out frames.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_ros.core.config import AxisSpec, GridSpec, PoolBounds
from occ_ros.model import build_from_config, load_checkpoint, load_weights, model_config, save_checkpoint
from occ_ros.train import data as D
from occ_ros.apps import train as train_cli
from occ_ros.train import loop as T
from occ_ros.train.losses import depth_targets

SRC_HW = (225, 400)
SHIPPED = Path(__file__).resolve().parents[1] / 'occ_ros' / 'weights' / 'lite_synth.ckpt'
# camera-masked mIoU (%) the shipped model scores on the 2 frames of `test_shipped_checkpoint_scores`,
# re-measured with the renderer after the CAM_BACK_LEFT rig fix (issue 19; 24.26 at export, see
# lite_synth.json); the floor is 80 % of it
SHIPPED_MIOU_MEASURED = 24.38
SHIPPED_FLOOR = 0.8


def small_cfg():
    g = GridSpec(x=AxisSpec(-25.6, 25.6, 0.8, 'x'), y=AxisSpec(-25.6, 25.6, 0.8, 'y'))
    return model_config('lite', grid=g,
                        pool_bounds=PoolBounds((110, 140, 360, 2080, 520, 140, 40, 10, 32)))


@pytest.fixture(scope='module')
def tiny():
    cfg = small_cfg()
    samples = D.render_sequence((3, D.DataSettings((3,), seconds=2.0, rate=1.0, src_hw=SRC_HW), cfg))
    inputs = T.model_inputs(cfg, SRC_HW)
    weights, _ = T.cache_class_weights(samples)
    return cfg, samples, inputs, weights


def make_trainer(tiny, steps=8, lr=1e-3, image_sem_weight=0.0):
    cfg, samples, inputs, weights = tiny
    T.seed_everything(7)
    model = build_from_config(cfg)
    s = T.TrainSettings(steps=steps, lr=lr, warmup=1, seed=7, lovasz_voxels=4096,
                        image_sem_weight=image_sem_weight)
    return T.Trainer(model, s, samples, weights, inputs, log=lambda _: None)


# ----------------------------------------------------------------------------- pure functions

def test_min_sample_depth_keeps_nearest_surface_and_crop():
    cfg = model_config('lite')
    g = cfg.image.with_source((450, 800))            # scale 0.4, crop_top 68
    depth = np.full((450, 800), 30.0, np.float32)
    depth[:, 400] = 5.0                               # one column, maps into input column 160
    depth[:170, :] = 0.0                              # sky in rows cropped away or top rows
    out = D.min_sample_depth(depth, (450, 800), cfg)
    assert out.shape == g.input_hw
    assert np.all(out[:, 160] == 5.0)                 # the nearer surface wins the min
    assert np.all(out[:, 159] == 30.0) and np.all(out[:, 161] == 30.0)
    # source row y lands in input row floor((y + .5)·0.4 − 68): rows < 170 → input rows < 0..0
    first_row = int(np.floor((170 + 0.5) * 0.4 - g.crop_top))
    assert np.all(out[:first_row] == 0.0) and np.all(out[first_row + 1:, 0] == 30.0)


def test_depth_bin_index_matches_depth_targets():
    cfg = model_config('lite')
    rng = np.random.default_rng(0)
    d = rng.uniform(0.5, 60.0, (2,) + cfg.image.input_hw).astype(np.float32)
    d[0, :16, :16] = 0.0
    idx = D.depth_bin_index(d, cfg)
    t = depth_targets(torch.from_numpy(d)[None], cfg.downsample, cfg.depth)[0]
    assert idx[0, 0, 0] == -1
    has = t.sum(-1) > 0
    assert torch.equal(torch.from_numpy(idx).long()[has], t.argmax(-1)[has])
    assert np.all(idx[~has.numpy()] == -1)


def test_schedule_and_seed_parsing():
    s = T.TrainSettings(steps=100, warmup=10, lr=1.0)
    assert s.lr_factor(0) == pytest.approx(s.warmup_ratio)
    assert s.lr_factor(10) == pytest.approx(1.0)
    assert s.lr_factor(100) == pytest.approx(s.min_lr_ratio)
    assert all(s.lr_factor(k) >= s.lr_factor(k + 1) for k in range(10, 100))
    assert T.parse_seeds('1-3,7') == (1, 2, 3, 7)


def test_batches_resume_continues_the_same_order():
    full = [idx for _, (_, idx) in zip(range(9), D.batches(7, 2, seed=3))]
    resumed = [idx for _, (_, idx) in zip(range(4), D.batches(7, 2, seed=3, start_step=5))]
    assert resumed == full[5:9]
    assert sorted(sum(full[:3], [])) == sorted(set(sum(full[:3], [])))   # no repeat in an epoch


def test_cache_targets(tiny):
    cfg, samples, _, _ = tiny
    s = samples[0]
    assert s.images.shape == (len(cfg.cameras), 3) + cfg.image.input_hw and s.images.dtype == torch.float16
    assert s.semantics.shape == cfg.grid.shape
    assert (s.depth_bin >= 0).float().mean() > 0.5          # most feature cells see a surface
    b = D.collate(samples[:1], cfg)
    assert b.heatmap.shape == (1, 10) + cfg.grid.bev_shape
    inside = [(abs(c[0]) < 25.6 and abs(c[1]) < 25.6) for c in s.obj_center]
    assert int(b.center_mask.sum()) >= 1 and int(b.center_mask.sum()) <= sum(inside)
    assert torch.all(b.heatmap[0].amax(0)[b.center_mask[0]] == 1.0)


def test_cell_classes_is_the_majority_class_of_each_feature_cell():
    """Against a brute-force loop over source pixels through the same resize/crop geometry."""
    cfg = small_cfg()
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 4, SRC_HW).astype(np.uint8)
    cls[:, : SRC_HW[1] // 3] = 15                          # a building on the left third
    got = D.cell_classes(cls, SRC_HW, cfg)
    g = cfg.image.with_source(SRC_HW)
    fh, fw = cfg.feature_hw
    votes = np.zeros((fh, fw, 18), np.int64)
    for y in range(SRC_HW[0]):
        fy = int(np.floor(((y + 0.5) * g.scale - g.crop_top) / cfg.downsample))
        if not 0 <= fy < fh:
            continue                                        # cropped away
        for x in range(SRC_HW[1]):
            fx = int(np.floor((x + 0.5) * g.scale / cfg.downsample))
            if 0 <= fx < fw:
                votes[fy, fx, cls[y, x]] += 1
    assert got.shape == (fh, fw) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, votes.argmax(-1))
    assert (got[:, 0] == 15).all()


# ----------------------------------------------------------------------------- training loop

def test_training_decreases_loss(tiny):
    tr = make_trainer(tiny, steps=6)
    losses = []
    for _ in range(6):
        losses.append(tr.train_step([0])['total'])
    assert losses[-1] < 0.8 * losses[0], losses


def test_free_voxel_sampling_is_an_unbiased_focal_estimate(tiny):
    """free_fraction < 1: the re-weighted focal term matches the full-volume one; the ratio
    losses see a uniform sample, so their free/occupied proportions stay the full ones."""
    cfg, samples, inputs, weights = tiny
    T.seed_everything(1)
    model = build_from_config(cfg).eval()
    batch = D.collate(samples[:1], cfg)
    with torch.no_grad():
        out = model(batch.img, *inputs)
        full = T.LossComputer(cfg, T.TrainSettings(free_fraction=1.0, lovasz_voxels=0), weights)
        part = T.LossComputer(cfg, T.TrainSettings(free_fraction=0.3, lovasz_voxels=0), weights)
        _, a = full(out, batch, 0)
        est = [part(out, batch, k)[1] for k in range(4)]
    focal = float(np.mean([e['focal'] for e in est]))
    assert focal == pytest.approx(a['focal'], rel=0.03)
    assert float(np.mean([e['geo'] for e in est])) == pytest.approx(a['geo'], rel=0.05)


def test_determinism_and_resume(tiny, tmp_path):
    a = make_trainer(tiny)
    a.train_steps(3)
    b = make_trainer(tiny)
    b.train_steps(3)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    # resume: 2 steps, checkpoint (own format) + optimiser state, fresh process state, 1 more
    c = make_trainer(tiny)
    c.train_steps(2)
    save_checkpoint(c.model, tmp_path / 'last.ckpt', {'step': c.step})
    torch.save(c.state(), tmp_path / 'state.pt')
    d = make_trainer(tiny)
    d.model.apply(lambda m: None)
    load_weights(d.model, tmp_path / 'last.ckpt')
    d.load_state(torch.load(tmp_path / 'state.pt', weights_only=True))
    assert d.step == 2
    d.train_steps(1)
    for (k, va), vd in zip(a.model.state_dict().items(), d.model.state_dict().values()):
        assert torch.equal(va, vd), k


def test_image_semantics_aux_head_trains_resumes_and_stays_out_of_the_model(tiny, tmp_path):
    cfg, samples, _, _ = tiny
    assert samples[0].image_sem is not None and samples[0].image_sem.shape == (len(cfg.cameras),) + cfg.feature_hw
    a = make_trainer(tiny, image_sem_weight=1.0)
    first = a.train_step([0])
    assert first['img_sem'] > 0
    for _ in range(5):
        last = a.train_step([0])
    assert last['img_sem'] < first['img_sem']                        # the head learns
    # the served model has exactly the parameters of a model trained without the head
    assert set(a.model.state_dict()) == set(build_from_config(cfg).state_dict())
    # resume restores the head too: 3 steps in one go == 2 steps, save, restore, 1 step
    b = make_trainer(tiny, image_sem_weight=1.0)
    b.train_steps(3)
    c = make_trainer(tiny, image_sem_weight=1.0)
    c.train_steps(2)
    save_checkpoint(c.model, tmp_path / 'last.ckpt', {'step': c.step})
    torch.save(c.state(), tmp_path / 'state.pt')
    d = make_trainer(tiny, image_sem_weight=1.0)
    load_weights(d.model, tmp_path / 'last.ckpt')
    d.load_state(torch.load(tmp_path / 'state.pt', weights_only=True))
    d.train_steps(1)
    for (k, vb), vd in zip(b.model.state_dict().items(), d.model.state_dict().values()):
        assert torch.equal(vb, vd), k
    assert all(torch.equal(x, y) for x, y in zip(b.aux.state_dict().values(), d.aux.state_dict().values()))


# ----------------------------------------------------------------------------- shipped model

def test_shipped_checkpoint_scores():
    model, meta = load_checkpoint(SHIPPED)
    record = json.loads(SHIPPED.with_suffix('.json').read_text())
    cfg = model.cfg
    assert cfg.name == 'lite' and SHIPPED.stat().st_size <= 25 * 2 ** 20
    seed = int(record['val_data']['seeds'][0])
    assert seed not in set(record['train_data']['seeds'])        # held out
    src = tuple(record['train_data']['src_hw'])
    settings = D.DataSettings((seed,), seconds=10.0, rate=0.2, src_hw=src, keep_eval=True)
    samples = D.render_sequence((seed, settings, cfg))           # 2 held-out frames
    res = T.evaluate(model, samples, T.model_inputs(cfg, src), rays=False)
    assert res['miou'] >= SHIPPED_FLOOR * SHIPPED_MIOU_MEASURED, res
    # validation frames carry the official ray origins: the key frames of their sequence every
    # 0.5 s (here two frames 5 s apart: the other frame's LiDAR lies ~30–50 m away)
    from occ_ros.metrics.origins import lidar_positions_in
    from occ_ros.metrics.raycast import DEFAULT_LIDAR_ORIGIN
    for s in samples:
        assert s.origins is not None and len(s.origins) >= 1
        assert np.all(np.abs(s.origins[:, :2]) < 39.0)
        assert np.min(np.linalg.norm(s.origins - np.asarray(DEFAULT_LIDAR_ORIGIN), axis=1)) < 1e-9   # own LiDAR
    assert lidar_positions_in(np.eye(4), np.eye(4)[None])[0].tolist() == list(DEFAULT_LIDAR_ORIGIN)


RECIPE_KEYS = ('model', 'seed', 'train_seeds', 'val_seeds', 'seconds', 'rate', 'val_seconds',
               'val_rate', 'src_hw', 'steps', 'batch_size', 'lr', 'weight_decay', 'warmup', 'clip',
               'lovasz_voxels', 'free_fraction', 'depth_weight', 'image_sem_weight', 'train_world',
               'bev_flip', 'threads')


def test_cli_defaults_are_the_shipped_recipe():
    """`occ-ros train` without options trains what was shipped: every recipe argument's default
    equals the value in the shipped model's training record (options added after a record was
    written count with their 'as before' value)."""
    import argparse
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    defaults = vars(p.parse_args([]))
    recorded = json.loads(SHIPPED.with_suffix('.json').read_text())['args']
    before_option = {'train_world': 'default', 'bev_flip': 'off'}
    differ = {k: (defaults[k], recorded.get(k, before_option.get(k))) for k in RECIPE_KEYS
              if defaults[k] != recorded.get(k, before_option.get(k))}
    assert not differ, f'CLI default vs shipped record: {differ}'


def _brute_force_fit(logits, labels, rounds):
    """The coordinate search scored the slow way: argmax over every voxel for every trial."""
    from occ_ros.train import calibrate as C
    bias = torch.zeros(18)
    best = C.miou_of(logits, labels, bias)
    trace = [best]
    for _ in range(rounds):
        for c in range(17):
            for d in C.DELTAS:
                trial = bias.clone()
                trial[c] = float(np.clip(float(trial[c]) + d, -C.BIAS_LIMIT, C.BIAS_LIMIT))
                v = C.miou_of(logits, labels, trial)
                if v > best + 1e-6:
                    best, bias = v, trial
        trace.append(best)
    return bias, trace


@pytest.mark.parametrize('ties', [False, True])
def test_incremental_calibration_search_equals_brute_force(ties):
    """The incremental search (runner-up kept per voxel) finds exactly the offsets and mIoU of
    the brute-force search, ties included (logits on the offsets' 0.25 grid tie all the time and
    must resolve to the lowest class index, as torch.argmax does)."""
    from occ_ros.train import calibrate as C
    g = torch.Generator().manual_seed(3)
    n = 6000
    labels = torch.randint(0, 18, (n,), generator=g)
    if ties:
        logits = torch.randint(-4, 5, (n, 18), generator=g).float() * 0.5
    else:
        logits = torch.randn(n, 18, generator=g)
    logits[torch.arange(n), labels] += 0.8                       # informative, so offsets matter
    logits[:, 17] += 1.0                                          # a free-class prior to undo
    fast, fast_trace = C.fit_class_bias(logits, labels, rounds=2)
    slow, slow_trace = _brute_force_fit(logits, labels, rounds=2)
    assert torch.equal(fast, slow), (fast, slow)
    assert fast_trace == pytest.approx(slow_trace, abs=1e-9)
    assert fast_trace[-1] > fast_trace[0] + 0.1 and bool((fast != 0).any())
    assert C.miou_of(logits, labels, fast) == pytest.approx(fast_trace[-1], abs=1e-9)


def test_recipe_from_args_rejects_bad_recipes_and_counts_the_shipped_frames():
    """recipe_from_args: named errors for a bad --src-hw and for validation seeds inside the
    training seeds; the default recipe's frame counts are the shipped record's cache sizes (what
    bench/bench_train.py projects the 90-minute budget from)."""
    import argparse
    from occ_ros.core.errors import ConfigError
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    with pytest.raises(ConfigError, match='--src-hw'):
        train_cli.recipe_from_args(p.parse_args(['--src-hw', '450by800']))
    with pytest.raises(ConfigError, match="'1-x' is not an integer"):
        train_cli.recipe_from_args(p.parse_args(['--train-seeds', '1-x']))
    with pytest.raises(ConfigError, match="seed range '5-3' is empty"):
        train_cli.recipe_from_args(p.parse_args(['--train-seeds', '5-3']))
    with pytest.raises(ConfigError, match=r'\[9001\] are also training seeds'):
        train_cli.recipe_from_args(p.parse_args(['--train-seeds', '1-3,9001', '--val-seeds', '9001-9002']))
    settings, tr, va = train_cli.recipe_from_args(p.parse_args([]))
    recorded = json.loads(SHIPPED.with_suffix('.json').read_text())
    assert (tr.frames, va.frames) == (recorded['train_frames'], recorded['val_frames'])
    assert settings.steps == recorded['steps_done'] and tr.src_hw == (450, 800) and va.keep_eval


def test_class_bias_folds_into_the_head(tiny):
    """apply_class_bias == adding the per-class offsets to every voxel's logits; the fit never
    lowers the objective it starts from."""
    from occ_ros.train import calibrate as C
    cfg, samples, inputs, _ = tiny
    T.seed_everything(2)
    model = build_from_config(cfg).eval()
    img = samples[0].images.float()[None]
    bias = torch.linspace(-1.0, 1.0, 18)
    with torch.no_grad():
        before = model(img, *inputs)['occ_logits']
        C.apply_class_bias(model, bias)
        after = model(img, *inputs)['occ_logits']
    torch.testing.assert_close(after, before + bias, atol=1e-5, rtol=0)
    logits = torch.randn(500, 18)
    labels = torch.randint(0, 18, (500,))
    lines: list = []
    fitted, trace = C.fit_class_bias(logits, labels, rounds=1, log=lines.append)
    assert trace[-1] >= trace[0] and fitted[17] == 0.0
    # progress: one line per fitted class (free excluded), the fit mIoU never decreasing
    assert len(lines) == 17 and lines[0].startswith('[calibrate] round 1/1 class 1/17 (others)')
    shown = [float(ln.split('fit mIoU ')[1].split(',')[0]) for ln in lines]
    assert shown == sorted(shown) and shown[0] == pytest.approx(trace[0], abs=0.01)
    assert C.miou_of(logits, labels, fitted) == pytest.approx(trace[-1])


def test_validation_curves_name_their_ray_protocol():
    """The training record's RayIoU is labelled by the protocol it was scored with: the shipped
    record predates the official ray origins (its entries carry no 'ray_protocol': one origin) and
    carries the official re-scoring as a separate final point; new entries say 'official'."""
    from occ_ros.metrics.origins import PROTOCOL_OFFICIAL
    from occ_ros.train.report import validation_series
    shipped = json.loads(SHIPPED.with_suffix('.json').read_text())
    series = validation_series(shipped)
    one = series['RayIoU, one origin (not the official protocol)']
    official = series['RayIoU, official origins (final, re-scored)']
    assert len(one) == len(shipped['validation_curve'])
    assert official == [(one[-1][0], shipped['validation_rescored']['official_origins']['rayiou'])]
    new = {'validation_curve': [{'step': s, 'miou': 1.0, 'rayiou': 2.0, 'ray_protocol': PROTOCOL_OFFICIAL}
                                for s in (10, 20)]}
    assert list(validation_series(new)) == ['mIoU (camera mask)', 'RayIoU, official origins']


def test_validate_rescores_a_checkpoint_on_its_records_validation_frames(tmp_path, capsys):
    """`python -m occ_ros.train.validate --write-record` on a small checkpoint whose record names
    one validation sequence: the frames are rendered again, scored from the official origins (each
    frame carries its sequence's key-frame LiDAR positions) and from one origin, both named by
    their protocol in the record's `validation_rescored`, the rest of the record untouched."""
    from occ_ros.train import validate as V
    T.seed_everything(3)
    model = build_from_config(small_cfg())
    ck = tmp_path / 'small.ckpt'
    save_checkpoint(model, ck, {'step': 0})
    record = {'val_data': {'seeds': [9001], 'seconds': 4.0, 'rate': 0.5, 'src_hw': list(SRC_HW)}, 'keep': 1}
    ck.with_suffix('.json').write_text(json.dumps(record))
    assert V.main(['--ckpt', str(ck), '--workers', '1', '--write-record']) == 0
    out = json.loads(ck.with_suffix('.json').read_text())
    assert out['keep'] == 1 and out['val_data'] == record['val_data']
    got = out['validation_rescored']
    assert got['frames'] == 2
    o, s = got['official_origins'], got['single_origin']
    assert o['ray_protocol'] == T.PROTOCOL_OFFICIAL and s['ray_protocol'] == T.PROTOCOL_SINGLE
    assert o['miou'] == s['miou']                                  # the origins change the rays only
    assert f"mIoU {o['miou']:.2f}" in capsys.readouterr().out

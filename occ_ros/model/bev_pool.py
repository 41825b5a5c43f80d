"""The LSS BEV pool, exact and plugin-free.

BEVPool-v2 sums depth_prob × context feature over all frustum points that fall into one BEV
cell. The official code needs a custom CUDA/TensorRT plugin; here the sum is a *bucketed padded
gather*: cells are grouped by how many points they receive (bucket k holds cells with at most
2**k points; a cell whose own bucket is full spills into the next one), each bucket is a dense
(cells, K) table of point indices padded with a pointer to an appended zero, and the per-cell
sum is one batched MatMul per bucket. Only Gather, MatMul, Concat, Reshape and Transpose reach
the exported graph — all native TensorRT layers.

The tables depend only on calibration (and, for a moving car, on the cameras' capture-time ego
poses). They are built on the device the ranks live on (`build_bev_pool_index`: the host for the
cached rig tables, the backend's device for per-frame ones) and passed to the network as three
int64 tensors whose sizes are fixed by `PoolBounds`, so a calibration change never needs a new
engine as long as it fits the bounds.

`bev_pool_fast` is an eager-only alternative (sparse CSR cells × pixels matrix times the
context features) that is several times faster on CPU; it is not exportable and is tested to be
equal to `bev_pool`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from occ_ros.core.config import PoolBounds
from occ_ros.core.errors import CalibrationError

# torch announces its sparse CSR support as beta on every construction; the fast path is tested
# against the gather path, so the notice carries no information here.
warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta state')


@dataclass(frozen=True)
class CsrPoolTables:
    """Tables of the sparse fast path (eager torch only, never exported).

    The pool is out = A · F with A the (cells × pixels) matrix whose entry (cell, pixel) is the
    sum of the depth probabilities of that pixel's frustum points falling in that cell, and F the
    (pixels, C) context features. The sparsity pattern is fixed by calibration; the values are
    gathered from the depth tensor each frame.

    crow: (cells + 1,) int64 CSR row pointers (rows = BEV cells y·nx + x).
    col: (E,) int64 pixel (context row) of each stored (cell, pixel) pair, ascending per row.
    value_idx: (E, R) int64 flat depth indices summed into each pair; pad = depth size (→ 0).
    """

    crow: torch.Tensor
    col: torch.Tensor
    value_idx: torch.Tensor
    feat_rows: int

    def to(self, device: torch.device | str) -> 'CsrPoolTables':
        return CsrPoolTables(self.crow.to(device), self.col.to(device),
                             self.value_idx.to(device), self.feat_rows)


@dataclass(frozen=True)
class BevPoolIndex:
    """Calibration-derived pooling tables (all int64, on one device).

    depth_idx: (P,) flat index into depth (N·D·fH·fW) per slot; the pad value N·D·fH·fW points at
        an appended zero. P = bounds.total_slots; bucket k occupies capacities[k]·2**k slots.
    feat_idx: (P,) row index into context features (N·fH·fW rows); pad = N·fH·fW.
    cell_row: (ny·nx,) row of each BEV cell in the concatenated bucket outputs; 0 = empty cell.
    fast: optional tables of the eager sparse fast path (`bev_pool_fast`).
    """

    depth_idx: torch.Tensor
    feat_idx: torch.Tensor
    cell_row: torch.Tensor
    bounds: PoolBounds
    bev_hw: tuple[int, int]
    num_points: int
    num_cells: int
    fast: Optional[CsrPoolTables] = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.depth_idx, self.feat_idx, self.cell_row)

    def to(self, device: torch.device | str) -> 'BevPoolIndex':
        return BevPoolIndex(self.depth_idx.to(device), self.feat_idx.to(device),
                            self.cell_row.to(device), self.bounds, self.bev_hw,
                            self.num_points, self.num_cells,
                            None if self.fast is None else self.fast.to(device))

    @property
    def device(self) -> torch.device:
        return self.cell_row.device

    def pool(self, depth: torch.Tensor, feat: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """`bev_pool` (or `bev_pool_fast` when `fast` and the tables exist) with these tables."""
        if fast and self.fast is not None:
            return bev_pool_fast(depth, feat, self)
        return bev_pool(depth, feat, self.depth_idx, self.feat_idx, self.cell_row, self.bounds,
                        self.bev_hw)


def _stable_argsort(keys: torch.Tensor, max_key: int) -> torch.Tensor:
    """`torch.argsort(keys, stable=True)` for int64 keys in [0, max_key]: the unstable sort of the
    unique keys key·n + i gives the same permutation and is several times faster on a CPU."""
    n = keys.numel()
    if (int(max_key) + 1) * max(n, 1) >= 2 ** 62:
        return torch.argsort(keys, stable=True)
    return torch.argsort(keys * n + torch.arange(n, device=keys.device))


def _bucket_range(k: int) -> tuple[int, int]:
    """Points per cell held by bucket k: (lo, hi] with lo = 0 for k = 0 else 2**(k-1)."""
    return (0 if k == 0 else 2 ** (k - 1), 2 ** k)


def required_capacities(ranks_bev: torch.Tensor, num_cells: int, num_buckets: int) -> list[int]:
    """How many cells fall into each bucket for these point→cell ranks (for sizing bounds).

    Cells with more than 2**(num_buckets-1) points are not counted in any bucket; compare
    `int(torch.bincount(ranks_bev).max())` with `PoolBounds.max_points_per_cell` for those.
    """
    cnt = torch.bincount(ranks_bev.long().cpu(), minlength=num_cells)
    cnt = cnt[cnt > 0].double()
    bucket = torch.ceil(torch.log2(cnt)).long()            # smallest k with cnt <= 2**k (exact)
    need = torch.bincount(bucket, minlength=num_buckets)[:num_buckets]
    return [int(v) for v in need]


def _suggest(need: list[int]) -> str:
    """A PoolBounds literal with the default headroom over `need` (`PoolBounds.from_need`)."""
    return f'PoolBounds(capacities={PoolBounds.from_need(need).capacities})'


def _assign_buckets(need: list[int], capacities: tuple[int, ...]) -> list[int] | None:
    """Cells stored in each bucket, or None if they do not fit.

    A cell may sit in any bucket at least as large as its own (more padding, same sum), so cells
    that overflow bucket k spill into bucket k+1. This fits iff for every k the cells needing
    bucket k or larger number at most the capacity of buckets k and larger.
    """
    assigned, carry = [], 0
    for n, cap in zip(need, capacities):
        carry += n
        put = min(carry, cap)
        assigned.append(put)
        carry -= put
    return None if carry else assigned


def _first_overflow(need: list[int], capacities: tuple[int, ...]) -> int:
    """The largest bucket k whose tail (buckets k.. and up) cannot hold the cells needing it."""
    for k in range(len(need) - 1, -1, -1):
        if sum(need[k:]) > sum(capacities[k:]):
            return k
    return 0


def _build_csr(rd: torch.Tensor, rf: torch.Tensor, rb: torch.Tensor, num_cells: int,
               depth_size: int, feat_rows: int) -> CsrPoolTables:
    """CSR tables of the (cells × pixels) matrix from the points (any order)."""
    key = rb * feat_rows + rf                                            # (M,) pair id, cell-major
    order = _stable_argsort(key, num_cells * feat_rows)
    key_s, rd_s = key[order], rd[order]
    pair, inverse, counts = torch.unique_consecutive(key_s, return_inverse=True,
                                                     return_counts=True)   # (E,), (M,), (E,)
    e = pair.numel()
    r = int(counts.max()) if e else 1
    first = torch.cumsum(counts, 0) - counts                             # (E,) first point of pair
    pos = torch.arange(key_s.numel(), device=rb.device) - first[inverse]  # (M,) slot within pair
    value_idx = torch.full((e, r), depth_size, dtype=torch.long, device=rb.device)
    value_idx[inverse, pos] = rd_s
    cells = pair // feat_rows
    crow = torch.zeros(num_cells + 1, dtype=torch.long, device=rb.device)
    crow[1:] = torch.cumsum(torch.bincount(cells, minlength=num_cells), 0)
    return CsrPoolTables(crow=crow, col=pair % feat_rows, value_idx=value_idx,
                         feat_rows=feat_rows)


def build_bev_pool_index(ranks_depth: torch.Tensor, ranks_feat: torch.Tensor,
                         ranks_bev: torch.Tensor, depth_size: int, feat_rows: int,
                         bev_hw: tuple[int, int], bounds: PoolBounds,
                         fast_path: bool = False) -> BevPoolIndex:
    """Build the bucketed tables from the kept frustum points.

    ranks_depth / ranks_feat / ranks_bev: (M,) int indices of each kept point into the flat
    depth tensor, the context-feature rows and the BEV cells (row-major y·nx + x).
    fast_path: also build the CSR tables of `bev_pool_fast`.
    A cell goes to the smallest bucket that holds its point count; when that bucket is full it
    spills into the next larger one (more padding, same sum), so the bounds only have to cover
    the tail sums of `required_capacities`.
    Raises CalibrationError when a cell gets more points than the largest bucket or the buckets
    from some k upward cannot hold the cells needing them; the message names the bucket and gives
    bounds that would fit.
    """
    dev = ranks_bev.device                                  # built where the ranks are (the backend's device)
    ranks_depth = ranks_depth.long().to(dev)
    ranks_feat = ranks_feat.long().to(dev)
    ranks_bev = ranks_bev.long()
    num_cells = bev_hw[0] * bev_hw[1]
    if not (ranks_depth.shape == ranks_feat.shape == ranks_bev.shape) or ranks_bev.dim() != 1:
        raise CalibrationError('ranks_depth, ranks_feat and ranks_bev must be 1-D of one length, '
                               'got '
                               f'{tuple(ranks_depth.shape)}, {tuple(ranks_feat.shape)}, '
                               f'{tuple(ranks_bev.shape)}')
    if ranks_bev.numel() and (int(ranks_bev.min()) < 0 or int(ranks_bev.max()) >= num_cells):
        raise CalibrationError(f'ranks_bev outside [0, {num_cells})')
    if ranks_depth.numel() and (int(ranks_depth.min()) < 0
                                or int(ranks_depth.max()) >= depth_size):
        raise CalibrationError(f'ranks_depth outside [0, {depth_size})')
    if ranks_feat.numel() and (int(ranks_feat.min()) < 0 or int(ranks_feat.max()) >= feat_rows):
        raise CalibrationError(f'ranks_feat outside [0, {feat_rows})')
    order = _stable_argsort(ranks_bev, num_cells)
    rd, rf, rb = ranks_depth[order], ranks_feat[order], ranks_bev[order]
    cnt = torch.bincount(rb, minlength=num_cells)
    start = torch.cumsum(cnt, 0) - cnt                      # first sorted point of each cell
    max_k = bounds.max_points_per_cell
    nb = len(bounds.capacities)
    if cnt.numel() and int(cnt.max()) > max_k:
        extra = max(1, (int(cnt.max()) - 1).bit_length() - (nb - 1))
        need = required_capacities(rb, num_cells, nb + extra)
        raise CalibrationError(
            f'a BEV cell receives {int(cnt.max())} frustum points but the pool bounds allow at '
            f'most {max_k} (largest bucket {nb - 1}): add {extra} bucket(s) to '
            f'PoolBounds.capacities (each doubles the limit), e.g. '
            f'ModelConfig.pool_bounds={_suggest(need)}, then '
            're-export / rebuild the engine')
    need = required_capacities(rb, num_cells, nb)
    assigned = _assign_buckets(need, bounds.capacities)
    if assigned is None:
        k = _first_overflow(need, bounds.capacities)
        lo, hi = _bucket_range(k)
        raise CalibrationError(
            f'BEV pool bucket {k} (cells with {lo + 1}..{hi} points) overflows: cells with more '
            f'than {lo} points need {sum(need[k:])} places in buckets {k}..{nb - 1} but those '
            f'hold {sum(bounds.capacities[k:])} (capacities {tuple(bounds.capacities)}, this '
            f'calibration needs {tuple(need)} per bucket). Raise PoolBounds.capacities, e.g. '
            f'ModelConfig.pool_bounds={_suggest(need)}, and re-export / rebuild the engine')
    # cells of each bucket in ascending-count order, so overflow spills the fullest cells upward
    by_count = _stable_argsort(cnt, int(cnt.max()) if cnt.numel() else 0)
    by_count = by_count[cnt[by_count] > 0]                          # (non-empty cells,)
    depth_parts, feat_parts = [], []
    cell_row = torch.zeros(num_cells, dtype=torch.long, device=dev)
    row_offset = 1                                          # row 0 is the all-zero row
    taken = 0
    for k, (cap, size) in enumerate(zip(bounds.capacities, bounds.bucket_sizes)):
        n_k = assigned[k]
        if cap == 0:
            continue
        cells = by_count[taken:taken + n_k]                              # (n_k,)
        taken += n_k
        # (cap, size) slot → sorted point index; missing slots point at the pad
        slot = torch.arange(size, device=dev).unsqueeze(0)                # (1, size)
        point = start[cells].unsqueeze(1) + slot                          # (n_k, size)
        used = slot < cnt[cells].unsqueeze(1)                             # (n_k, size)
        d_tab = torch.full((cap, size), depth_size, dtype=torch.long, device=dev)
        f_tab = torch.full((cap, size), feat_rows, dtype=torch.long, device=dev)
        if n_k:
            safe = torch.where(used, point, torch.zeros_like(point))
            d_tab[:n_k] = torch.where(used, rd[safe], torch.full_like(point, depth_size))
            f_tab[:n_k] = torch.where(used, rf[safe], torch.full_like(point, feat_rows))
            cell_row[cells] = row_offset + torch.arange(n_k, device=dev)
        depth_parts.append(d_tab.flatten())
        feat_parts.append(f_tab.flatten())
        row_offset += cap
    fast = _build_csr(rd, rf, rb, num_cells, depth_size, feat_rows) if fast_path else None
    return BevPoolIndex(
        depth_idx=torch.cat(depth_parts) if depth_parts else torch.zeros(0, dtype=torch.long, device=dev),
        feat_idx=torch.cat(feat_parts) if feat_parts else torch.zeros(0, dtype=torch.long, device=dev),
        cell_row=cell_row, bounds=bounds, bev_hw=(int(bev_hw[0]), int(bev_hw[1])),
        num_points=int(rb.numel()), num_cells=int((cnt > 0).sum()), fast=fast)


def bev_pool(depth: torch.Tensor, feat: torch.Tensor, depth_idx: torch.Tensor,
             feat_idx: torch.Tensor, cell_row: torch.Tensor, bounds: PoolBounds,
             bev_hw: tuple[int, int]) -> torch.Tensor:
    """Sum depth_prob × feature per BEV cell (the exportable form).

    depth: (B, N, D, fH, fW) depth probabilities; feat: (B, N, fH, fW, C) context features;
    index tensors from `BevPoolIndex.tensors()`. Returns (B, C, ny, nx). The products and sums
    run in float32 whatever the input dtype (fp16 graphs keep the accumulation exact).
    """
    b = depth.shape[0]
    c = feat.shape[-1]
    out_dtype = feat.dtype
    d = torch.cat([depth.reshape(b, -1).float(), depth.new_zeros(b, 1, dtype=torch.float32)], 1)
    f = torch.cat([feat.reshape(b, -1, c).float(),
                   feat.new_zeros(b, 1, c, dtype=torch.float32)], 1)
    rows = [f.new_zeros(b, 1, c)]                                          # the empty-cell row
    offset = 0
    for cap, size in zip(bounds.capacities, bounds.bucket_sizes):
        if cap == 0:
            continue
        n = cap * size
        di = depth_idx[offset:offset + n]
        fi = feat_idx[offset:offset + n]
        offset += n
        dv = torch.index_select(d, 1, di).reshape(b * cap, 1, size)        # (B·cap, 1, K)
        fv = torch.index_select(f, 1, fi).reshape(b * cap, size, c)        # (B·cap, K, C)
        rows.append(torch.bmm(dv, fv).reshape(b, cap, c))                  # (B, cap, C)
    table = torch.cat(rows, 1)                                             # (B, 1+Σcap, C)
    bev = torch.index_select(table, 1, cell_row)                           # (B, ny·nx, C)
    ny, nx = bev_hw
    return bev.transpose(1, 2).reshape(b, c, ny, nx).to(out_dtype)          # (B, C, ny, nx)


def bev_pool_fast(depth: torch.Tensor, feat: torch.Tensor, index: BevPoolIndex) -> torch.Tensor:
    """Eager-only sparse pool, same result as `bev_pool` (float32 accumulation).

    depth: (B, N, D, fH, fW); feat: (B, N, fH, fW, C); `index` built with fast_path=True.
    Returns (B, C, ny, nx). Per batch element: values of A (cells × pixels) = sum of the depth
    probabilities of each stored (cell, pixel) pair; out = A @ F (torch sparse CSR matmul).
    Not exportable (torch.export / ONNX have no sparse CSR); use `bev_pool` in graphs.
    """
    tab = index.fast
    if tab is None:
        raise CalibrationError('this BevPoolIndex has no fast-path tables: build it with '
                               'build_bev_pool_index(..., fast_path=True)')
    b = depth.shape[0]
    c = feat.shape[-1]
    ny, nx = index.bev_hw
    zero = depth.new_zeros(1, dtype=torch.float32)
    outs = []
    for i in range(b):
        d = torch.cat([depth[i].reshape(-1).float(), zero])                # (N·D·fH·fW + 1,)
        if tab.value_idx.shape[1] == 1:
            vals = d[tab.value_idx[:, 0]]                                  # (E,)
        else:
            vals = d[tab.value_idx].sum(1)                                 # (E,)
        a = torch.sparse_csr_tensor(tab.crow, tab.col, vals, size=(ny * nx, tab.feat_rows),
                                    check_invariants=False)
        f = feat[i].reshape(tab.feat_rows, c).float()                      # (N·fH·fW, C)
        outs.append(a @ f)                                                 # (ny·nx, C)
    bev = torch.stack(outs)                                                # (B, ny·nx, C)
    return bev.transpose(1, 2).reshape(b, c, ny, nx).to(feat.dtype)        # (B, C, ny, nx)

"""The LSS BEV pool, exact and plugin-free.

BEVPool-v2 sums depth_prob × context feature over all frustum points that fall into one BEV
cell. The official code needs a custom CUDA/TensorRT plugin; here the sum is a *bucketed padded
gather*: cells are grouped by how many points they receive (bucket k holds cells with at most
2**k points), each bucket is a dense (cells, K) table of point indices padded with a pointer to an
appended zero, and the per-cell sum is one batched MatMul per bucket. Only Gather, MatMul,
Concat, Reshape and Transpose reach the exported graph — all native TensorRT layers.

The tables depend only on calibration. They are built on the host (`build_bev_pool_index`)
and passed to the network as three int64 tensors whose sizes are fixed by `PoolBounds`, so a
calibration change never needs a new engine as long as it fits the bounds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from occ_ros.config import PoolBounds
from occ_ros.errors import CalibrationError


@dataclass(frozen=True)
class BevPoolIndex:
    """Calibration-derived pooling tables (all int64, on one device).

    depth_idx: (P,) flat index into depth (N·D·fH·fW) per slot; the pad value N·D·fH·fW points at
        an appended zero. P = bounds.total_slots; bucket k occupies capacities[k]·2**k slots.
    feat_idx: (P,) row index into context features (N·fH·fW rows); pad = N·fH·fW.
    cell_row: (ny·nx,) row of each BEV cell in the concatenated bucket outputs; 0 = empty cell.
    """

    depth_idx: torch.Tensor
    feat_idx: torch.Tensor
    cell_row: torch.Tensor
    bounds: PoolBounds
    bev_hw: tuple[int, int]
    num_points: int
    num_cells: int

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.depth_idx, self.feat_idx, self.cell_row)

    def to(self, device: torch.device | str) -> 'BevPoolIndex':
        return BevPoolIndex(self.depth_idx.to(device), self.feat_idx.to(device),
                            self.cell_row.to(device), self.bounds, self.bev_hw,
                            self.num_points, self.num_cells)


def required_capacities(ranks_bev: torch.Tensor, num_cells: int, num_buckets: int) -> list[int]:
    """How many cells fall into each bucket for these point→cell ranks (for sizing bounds)."""
    cnt = torch.bincount(ranks_bev.long(), minlength=num_cells)
    need = []
    for k in range(num_buckets):
        lo = 0 if k == 0 else 2 ** (k - 1)
        need.append(int(((cnt > lo) & (cnt <= 2 ** k)).sum()))
    return need


def build_bev_pool_index(ranks_depth: torch.Tensor, ranks_feat: torch.Tensor,
                         ranks_bev: torch.Tensor, depth_size: int, feat_rows: int,
                         bev_hw: tuple[int, int], bounds: PoolBounds) -> BevPoolIndex:
    """Build the bucketed tables from the kept frustum points.

    ranks_depth / ranks_feat / ranks_bev: (M,) int indices of each kept point into the flat
    depth tensor, the context-feature rows and the BEV cells (row-major y·nx + x).
    Raises CalibrationError when a cell gets more points than the largest bucket or a bucket
    overflows its capacity; the message names the bound to raise.
    """
    ranks_depth = ranks_depth.long().cpu()
    ranks_feat = ranks_feat.long().cpu()
    ranks_bev = ranks_bev.long().cpu()
    num_cells = bev_hw[0] * bev_hw[1]
    if not (ranks_depth.shape == ranks_feat.shape == ranks_bev.shape):
        raise CalibrationError('ranks_depth, ranks_feat and ranks_bev must have the same length')
    if ranks_bev.numel() and (int(ranks_bev.min()) < 0 or int(ranks_bev.max()) >= num_cells):
        raise CalibrationError(f'ranks_bev outside [0, {num_cells})')
    order = torch.argsort(ranks_bev, stable=True)
    rd, rf, rb = ranks_depth[order], ranks_feat[order], ranks_bev[order]
    cnt = torch.bincount(rb, minlength=num_cells)
    start = torch.cumsum(cnt, 0) - cnt                      # first sorted point of each cell
    max_k = bounds.max_points_per_cell
    if cnt.numel() and int(cnt.max()) > max_k:
        raise CalibrationError(
            f'a BEV cell receives {int(cnt.max())} frustum points but the pool bounds allow at most '
            f'{max_k}: add buckets to PoolBounds.capacities (one more doubles the limit) and '
            're-export / rebuild the engine')
    depth_parts, feat_parts = [], []
    cell_row = torch.zeros(num_cells, dtype=torch.long)
    row_offset = 1                                          # row 0 is the all-zero row
    need = required_capacities(rb, num_cells, len(bounds.capacities))
    for k, (cap, size) in enumerate(zip(bounds.capacities, bounds.bucket_sizes)):
        lo = 0 if k == 0 else size // 2
        cells = torch.nonzero((cnt > lo) & (cnt <= size)).flatten()     # (n_k,)
        if cells.numel() > cap:
            raise CalibrationError(
                f'BEV pool bucket {k} (cells with {lo + 1}..{size} points) needs {cells.numel()} '
                f'cells but its capacity is {cap}; calibration needs capacities >= {need}. '
                'Raise PoolBounds.capacities and re-export / rebuild the engine')
        if cap == 0:
            continue
        # (cap, size) slot → sorted point index; missing slots point at the pad
        slot = torch.arange(size).unsqueeze(0)                            # (1, size)
        point = start[cells].unsqueeze(1) + slot                          # (n_k, size)
        used = slot < cnt[cells].unsqueeze(1)                             # (n_k, size)
        d_tab = torch.full((cap, size), depth_size, dtype=torch.long)
        f_tab = torch.full((cap, size), feat_rows, dtype=torch.long)
        n_k = cells.numel()
        if n_k:
            safe = torch.where(used, point, torch.zeros_like(point))
            d_tab[:n_k] = torch.where(used, rd[safe], torch.full_like(point, depth_size))
            f_tab[:n_k] = torch.where(used, rf[safe], torch.full_like(point, feat_rows))
            cell_row[cells] = row_offset + torch.arange(n_k)
        depth_parts.append(d_tab.flatten())
        feat_parts.append(f_tab.flatten())
        row_offset += cap
    return BevPoolIndex(
        depth_idx=torch.cat(depth_parts) if depth_parts else torch.zeros(0, dtype=torch.long),
        feat_idx=torch.cat(feat_parts) if feat_parts else torch.zeros(0, dtype=torch.long),
        cell_row=cell_row, bounds=bounds, bev_hw=tuple(bev_hw),
        num_points=int(rb.numel()), num_cells=int((cnt > 0).sum()))


def bev_pool(depth: torch.Tensor, feat: torch.Tensor, depth_idx: torch.Tensor,
             feat_idx: torch.Tensor, cell_row: torch.Tensor, bounds: PoolBounds,
             bev_hw: tuple[int, int]) -> torch.Tensor:
    """Sum depth_prob × feature per BEV cell.

    depth: (B, N, D, fH, fW) depth probabilities; feat: (B, N, fH, fW, C) context features;
    index tensors from `BevPoolIndex.tensors()`. Returns (B, C, ny, nx). The products and sums
    run in float32 whatever the input dtype (fp16 graphs keep the accumulation exact).
    """
    b = depth.shape[0]
    c = feat.shape[-1]
    out_dtype = feat.dtype
    d = torch.cat([depth.reshape(b, -1).float(), depth.new_zeros(b, 1, dtype=torch.float32)], 1)
    f = torch.cat([feat.reshape(b, -1, c).float(), feat.new_zeros(b, 1, c, dtype=torch.float32)], 1)
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

"""Pictures of occupancy results: BEV semantic maps, 3-D voxel renderings, camera mosaics.

Pure numpy + Pillow (no display, no matplotlib), so the demo and `occ-ros eval` can write PNGs
on a headless machine. Colours come from the one class table (`occ_ros.core.classes.PALETTE`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from occ_ros.core.classes import FREE, OCC_CLASSES, PALETTE

_PALETTE = np.array(PALETTE, dtype=np.uint8)
UNKNOWN_RGB = (40, 40, 48)
FREE_RGB = (250, 250, 250)


def _font(size: int = 14) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                                     # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def bev_semantic_map(semantics: np.ndarray, visible: Optional[np.ndarray] = None,
                     scale: int = 3) -> Image.Image:
    """Top-down map: each (x, y) column shows its highest non-free voxel's class.

    semantics: (nx, ny, nz) uint8; visible: optional (nx, ny, nz) bool — columns no camera sees
    are drawn dark. The image has x (forward) pointing up and y (left) pointing left, ego at
    the centre, like a driver's map.
    """
    sem = np.asarray(semantics)
    occupied: np.ndarray = np.asarray(sem != FREE)
    nz = sem.shape[2]
    top = nz - 1 - np.argmax(occupied[:, :, ::-1], axis=2)             # highest occupied z
    any_occ = np.asarray(occupied.any(axis=2))
    cls = np.take_along_axis(sem, top[..., None], 2)[..., 0]
    rgb = np.where(any_occ[..., None], _PALETTE[cls], np.array(FREE_RGB, np.uint8))
    if visible is not None:
        seen = np.asarray(np.asarray(visible).any(axis=2))
        rgb = np.where(seen[..., None], rgb, np.array(UNKNOWN_RGB, np.uint8))
    # array is [x, y]; image rows = −x (forward up), columns = −y (left on the left)
    img = rgb[::-1, ::-1]
    out = Image.fromarray(np.ascontiguousarray(img), 'RGB')
    if scale != 1:
        out = out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(out)
    cx, cy = out.width // 2, out.height // 2
    draw.polygon([(cx, cy - 3 * scale), (cx - 2 * scale, cy + 2 * scale), (cx + 2 * scale, cy + 2 * scale)],
                 fill=(0, 0, 0))                                        # ego, pointing forward
    return out


def voxel_rendering(semantics: np.ndarray, size: tuple[int, int] = (720, 540),
                    azimuth_deg: float = -135.0, elevation_deg: float = 35.0,
                    max_range_cells: Optional[int] = None) -> Image.Image:
    """A shaded 3-D view of the occupied voxels (orthographic, z-buffered splats).

    semantics: (nx, ny, nz) uint8; free voxels are not drawn.
    """
    sem = np.asarray(semantics)
    nx, ny, nz = sem.shape
    flat = np.flatnonzero(sem != FREE)
    ix, rest = np.divmod(flat, ny * nz)
    iy, iz = np.divmod(rest, nz)
    if max_range_cells is not None:
        keep = (np.abs(ix - nx / 2) < max_range_cells) & (np.abs(iy - ny / 2) < max_range_cells)
        flat, ix, iy, iz = flat[keep], ix[keep], iy[keep], iz[keep]
    w, h = size
    canvas = np.full((h, w, 3), 255, np.uint8)
    if len(flat) == 0:
        return Image.fromarray(canvas, 'RGB')
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    # camera basis: view direction d, right r, up u
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), -np.sin(el)])
    r = np.cross(d, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(r, d)
    p = np.stack([ix - nx / 2, iy - ny / 2, iz.astype(np.float64)], axis=1)
    sx, sy, depth = p @ r, p @ u, p @ d
    extent = max(np.ptp(sx), np.ptp(sy) * w / h, 1.0)
    s = 0.95 * w / extent
    px = ((sx - sx.mean()) * s + w / 2).astype(np.int64)
    py = (h / 2 - (sy - sy.mean()) * s).astype(np.int64)
    k = max(1, int(np.ceil(s)))
    # colour of (class, height): the class colour shaded lighter with height, and its darker outline
    shade = 0.55 + 0.45 * (np.arange(nz) / max(nz - 1, 1))
    lut = (_PALETTE.astype(np.float64)[:, None, :] * shade[None, :, None]).clip(0, 255).astype(np.uint8)
    order = np.argsort(-depth)                                          # far first, near overwrite
    px, py = px[order], py[order]
    key = sem.ravel()[flat[order]].astype(np.int64) * nz + iz[order]
    colour = lut.reshape(-1, 3)[key]
    for dx in range(k):
        for dy in range(k):
            x, y = px + dx, py + dy
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            canvas[y[ok], x[ok]] = colour[ok]
    edge = (px >= 0) & (px < w) & (py >= 0) & (py < h)                   # dark outline pixel
    canvas[py[edge], px[edge]] = (lut * 0.6).astype(np.uint8).reshape(-1, 3)[key[edge]]
    return Image.fromarray(canvas, 'RGB')


def legend(classes: Sequence[int] = tuple(range(FREE)), width: int = 200) -> Image.Image:
    """Colour legend of the given occupancy classes."""
    row = 18
    img = Image.new('RGB', (width, row * len(classes) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(12)
    for i, c in enumerate(classes):
        y = 3 + i * row
        draw.rectangle([4, y + 2, 18, y + 14], fill=PALETTE[c], outline=(0, 0, 0))
        draw.text((24, y + 2), OCC_CLASSES[c], fill=(0, 0, 0), font=font)
    return img


def titled(img: Image.Image, title: str) -> Image.Image:
    out = Image.new('RGB', (img.width, img.height + 22), (255, 255, 255))
    out.paste(img, (0, 22))
    ImageDraw.Draw(out).text((4, 3), title, fill=(0, 0, 0), font=_font(15))
    return out


def hstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    h = max(i.height for i in images)
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    out = Image.new('RGB', (w, h), (255, 255, 255))
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out


def vstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    w = max(i.width for i in images)
    h = sum(i.height for i in images) + gap * (len(images) - 1)
    out = Image.new('RGB', (w, h), (255, 255, 255))
    y = 0
    for i in images:
        out.paste(i, (0, y))
        y += i.height + gap
    return out


def prediction_vs_truth(pred: np.ndarray, gt: np.ndarray, gt_mask: Optional[np.ndarray] = None,
                        pred_visible: Optional[np.ndarray] = None, title: str = '') -> Image.Image:
    """BEV maps of prediction and ground truth side by side, with a legend."""
    left = titled(bev_semantic_map(pred, pred_visible), f'prediction {title}'.strip())
    right = titled(bev_semantic_map(gt, gt_mask), 'ground truth')
    return hstack([left, right, legend()])


def camera_mosaic(images: Sequence[Optional[np.ndarray]], names: Sequence[str],
                  caption: str = '', tile_width: int = 400) -> Image.Image:
    """The six camera images in two rows (front row, back row) with names and a caption.

    images: RGB uint8 arrays (None → a grey "missing" tile), in nuScenes order
    (FRONT_LEFT, FRONT, FRONT_RIGHT, BACK_LEFT, BACK, BACK_RIGHT).
    """
    tiles = []
    font = _font(14)
    tile_h = None
    for im, name in zip(images, names):
        if im is None:
            h = tile_h or int(tile_width * 9 / 16)
            tile = Image.new('RGB', (tile_width, h), (90, 90, 90))
            ImageDraw.Draw(tile).text((10, h // 2), 'missing', fill=(255, 255, 255), font=font)
        else:
            pil = Image.fromarray(np.asarray(im, np.uint8), 'RGB')
            h = int(round(pil.height * tile_width / pil.width))
            tile = pil.resize((tile_width, h), Image.Resampling.BILINEAR)
        tile_h = tile_h or tile.height
        ImageDraw.Draw(tile).text((6, 4), name, fill=(255, 255, 0), font=font)
        tiles.append(tile)
    half = (len(tiles) + 1) // 2
    rows = [hstack(tiles[:half], gap=4), hstack(tiles[half:], gap=4)] if len(tiles) > 1 else tiles
    grid = vstack(rows, gap=4)
    return titled(grid, caption) if caption else grid

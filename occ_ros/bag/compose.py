"""The renderer's compiled per-pixel passes (numba), besides the colour pass (`bag.colour`): the
z-test of one rasterised face, a camera's per-pixel rays and sky colours (`camera_rays`,
`sky_image`), depth from inverse depth (`depth_from_inverse`), and the ground truth's box loop
(`voxelise_boxes`) and per-camera visibility test (`camera_visibility`).

Each goes through the float32 / float64 operations of the numpy expressions it replaced, in the
same order, so its results are bit-identical to them: that is what `test/test_render_pinned.py`
holds the frames and ground truth to.

`zbuffer_face` fuses the rasteriser's per-face numpy steps (inverse depth over the face's pixel
box, compare, two masked copies) into one loop over the covered pixels, with the same float32
operations in the same order: the z-buffer and face ids are the same, bit for bit.

Compiled on first use (cached in __pycache__ when the folder is writable); `warm_up()` compiles
them in the parent before rendering workers fork, so they share the compiled code.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_F = np.float32


@njit(cache=True)
def sky_image(n_pixels: int, open_idx: np.ndarray, el: np.ndarray, a: np.ndarray, az: np.ndarray,
              cloud_noise: np.ndarray, horizon: np.ndarray, zenith: np.ndarray, haze: np.ndarray) -> np.ndarray:
    """A camera's sky colours, (n_pixels, 3) float32, 0 except at the pixels `open_idx` (those that
    do not see the ground plane), from each one's ray elevation `el`, gradient weight `a` and
    azimuth `az` (float64; the transcendental functions stay numpy's, whose SIMD versions may
    differ from libm's in the last bit).

    Colour: horizon·(1 − a) + zenith·a, haze below the horizon; clouds from `cloud_noise`
    (float32, 128 × 128) at (⌊clip(el, 0, 1.5)·90⌋ mod 128, ⌊az / 2π · 512⌋ mod 128), their
    weight clip((noise − 0.55)·2.5, 0, 1) in float32 times clip(el / 0.05, 0, 1)·(1 − a), blended
    towards 242. The operations, their order and their float32 / float64 types are those of the
    numpy expressions this replaces (`test_render_pinned` holds the images to them); one pass
    instead of a dozen over (N, 3) temporaries."""
    out = np.zeros((n_pixels, 3), np.float32)
    nn = cloud_noise.shape[0]
    two_pi = 2 * np.pi
    c055, c25, zero, one = _F(0.55), _F(2.5), _F(0.0), _F(1.0)
    for j in range(open_idx.shape[0]):
        e = el[j]
        w = a[j]
        if e < 0:
            s0, s1, s2 = np.float64(haze[0]), np.float64(haze[1]), np.float64(haze[2])
        else:
            s0 = np.float64(horizon[0]) * (1 - w) + np.float64(zenith[0]) * w
            s1 = np.float64(horizon[1]) * (1 - w) + np.float64(zenith[1]) * w
            s2 = np.float64(horizon[2]) * (1 - w) + np.float64(zenith[2]) * w
        ci = np.int64((az[j] / two_pi) * 512) % nn
        cj = np.int64(min(max(e, 0.0), 1.5) * 90) % nn
        c = (cloud_noise[cj, ci] - c055) * c25
        c = min(max(c, zero), one)
        cloud = (np.float64(c) * min(max(e / 0.05, 0.0), 1.0)) * (1 - w)
        keep = 1 - cloud * 0.8
        add = 242.0 * cloud * 0.8
        p = open_idx[j]
        out[p, 0] = _F(s0 * keep + add)
        out[p, 1] = _F(s1 * keep + add)
        out[p, 2] = _F(s2 * keep + add)
    return out


@njit(cache=True)
def depth_from_inverse(inv: np.ndarray) -> np.ndarray:
    """Depth 1 / inv where inv > 0, else 0 (sky), as float32 — the float32 division numpy's
    `np.divide(1, inv, where=inv > 0)` performs, without its masked ufunc (a fifth of its time on a
    camera image)."""
    src = inv.ravel()
    dst = np.empty(src.shape[0], np.float32)
    one = np.float32(1.0)
    for i in range(src.shape[0]):
        x = src[i]
        dst[i] = one / x if x > 0 else np.float32(0.0)
    return dst.reshape(inv.shape)


@njit(cache=True, inline='always')
def _face_inverse_depth(c0: np.float32, u: int, c1v: np.float32, c2: np.float32) -> np.float32:
    """1/z of a face at column u of a row: (c0·u + c1·v) + c2 in float32, with c1·v (`c1v`) given."""
    return (c0 * np.float32(u) + c1v) + c2


@njit(cache=True, inline='always')
def ztest_pixel(inv: np.ndarray, fid: np.ndarray, v: int, u: int, c0: np.float32, c1: np.float32, c2: np.float32,
                k: int) -> int:
    """Depth-test pixel (v, u) of a face whose inverse depth is 1/z = c0·u + c1·v + c2 (float32, in
    that order of operations: (c0·u + c1·v) + c2): where it is greater than `inv`'s, write it to
    `inv` and `k` to `fid` and return 1, else 0."""
    r = _face_inverse_depth(c0, u, c1 * np.float32(v), c2)
    if r > inv[v, u]:
        inv[v, u] = r
        fid[v, u] = k
        return 1
    return 0


@njit(cache=True, inline='always')
def ztest_span(inv_flat: np.ndarray, fid_flat: np.ndarray, W: int, v: int, ua: int, ub: int, c0: np.float32,
               c1: np.float32, c2: np.float32, k: int) -> int:
    """`ztest_pixel` on the pixels (v, ua..ub) of one row of the flat (H·W) `inv` / `fid`, in a loop
    that vectorises (unsigned indices, the row's c1·v computed once: the same product each pixel
    had). Returns how many pixels the face won."""
    cv = c1 * np.float32(v)
    base = v * W
    hit = 0
    for u in range(ua, ub + 1):
        r = _face_inverse_depth(c0, u, cv, c2)
        q = np.uint64(base + u)
        if r > inv_flat[q]:
            inv_flat[q] = r
            fid_flat[q] = k
            hit += 1
    return hit


@njit(cache=True)
def zbuffer_face(inv: np.ndarray, fid: np.ndarray, mask: np.ndarray, v0: int, u0: int, c0: np.float32,
                 c1: np.float32, c2: np.float32, k: int) -> int:
    """Depth-test one face into the z-buffer (`ztest_pixel`) where `mask`, its coverage of the box
    v0.., u0.., is set. Returns how many pixels the face won (0: the face is hidden and `k` was
    written nowhere)."""
    h, w = mask.shape
    won = 0
    for i in range(h):
        for j in range(w):
            if mask[i, j]:
                won += ztest_pixel(inv, fid, v0 + i, u0 + j, c0, c1, c2, k)
    return won


@njit(cache=True)
def camera_visibility(mask: np.ndarray, vox: np.ndarray, pix: np.ndarray, rng: np.ndarray,
                      with_margin: np.ndarray, inv: np.ndarray, fid: np.ndarray, face_h: np.ndarray,
                      norm: np.ndarray, ground_idx: np.ndarray, ground_cos: np.ndarray,
                      margin: np.float32) -> None:
    """Mark in `mask` the voxels one camera sees (the ground truth's mask_camera test).

    Per pixel p of the camera's depth raster: the incidence cosine (1; the ground's where the
    ground is seen; a face's f32(face_h)·inv / norm where a face is), the range to the surface
    norm / max(inv, 1e-12) (∞ where nothing was hit) and the voxel margin
    margin / max(min(cos, 1), 0.2). Sample k (voxel vox[k], pixel pix[k], range rng[k]) is seen
    when rng ≤ surface + margin · with_margin. Every value is float32, computed in the order of
    the numpy expressions this replaces (float32 arrays with Python scalars: float32 operations),
    so the mask is the same bit for bit (test_render_pinned pins it)."""
    n = inv.shape[0]
    cos = np.ones(n, np.float32)
    for j in range(ground_idx.shape[0]):
        cos[ground_idx[j]] = ground_cos[j]
    surf = np.empty(n, np.float32)
    marg = np.empty(n, np.float32)
    eps = np.float32(1e-12)
    for p in range(n):
        if fid[p] >= 0:
            cos[p] = (face_h[fid[p]] * inv[p]) / norm[p]
        surf[p] = norm[p] / max(inv[p], eps) if inv[p] > 0 else np.float32(np.inf)
        marg[p] = margin / max(min(cos[p], np.float32(1.0)), np.float32(0.2))
    for k in range(pix.shape[0]):
        p = pix[k]
        if rng[k] <= surf[p] + marg[p] * with_margin[k]:
            mask[vox[k]] = True


@njit(cache=True)
def voxelise_boxes(sem: np.ndarray, inst: np.ndarray, centre: np.ndarray, size: np.ndarray, yaw: np.ndarray,
                   cls: np.ndarray, iid: np.ndarray, order: np.ndarray, xc: np.ndarray, yc: np.ndarray,
                   lo: np.ndarray, step: np.ndarray, eps: float) -> None:
    """Write the boxes (ego frame; in `order`, later ones overwrite) into the ground truth's grids:
    class `cls` and instance `iid` at every voxel whose centre is inside a box (within `eps`), or,
    for a box that contains no voxel centre, along the column under its centre. lo, step: the
    grid's (x, y, z) lower bounds and voxel sizes; xc, yc: its voxel centres along x and y.

    The float64 operations, their order and the rounding (ceil / floor of the same quotients) are
    those of the Python loop this replaces, so the grids are the same bit for bit
    (`test/test_render_pinned.py` pins them)."""
    nx, ny, nz = sem.shape
    x0, y0, z0 = lo[0], lo[1], lo[2]
    dx, dy, dz = step[0], step[1], step[2]
    for q in range(order.shape[0]):
        b = order[q]
        cx, cy, cz = centre[b, 0], centre[b, 1], centre[b, 2]
        L, W, Hh = size[b, 0], size[b, 1], size[b, 2]
        c, s = math.cos(yaw[b]), math.sin(yaw[b])
        ex = 0.5 * (abs(c) * L + abs(s) * W)
        ey = 0.5 * (abs(s) * L + abs(c) * W)
        i0 = max(0, math.ceil((cx - ex - x0) / dx - 0.5 - eps))
        i1 = min(nx - 1, math.floor((cx + ex - x0) / dx - 0.5 + eps))
        j0 = max(0, math.ceil((cy - ey - y0) / dy - 0.5 - eps))
        j1 = min(ny - 1, math.floor((cy + ey - y0) / dy - 0.5 + eps))
        k0 = max(0, math.ceil((cz - Hh / 2 - z0) / dz - 0.5 - eps))
        k1 = min(nz - 1, math.floor((cz + Hh / 2 - z0) / dz - 0.5 + eps))
        hit = False
        if i0 <= i1 and j0 <= j1 and k0 <= k1:
            for i in range(i0, i1 + 1):
                X = xc[i] - cx
                for j in range(j0, j1 + 1):
                    Y = yc[j] - cy
                    lx = X * c + Y * s
                    ly = -X * s + Y * c
                    if abs(lx) <= L / 2 + eps and abs(ly) <= W / 2 + eps:
                        hit = True
                        for k in range(k0, k1 + 1):
                            sem[i, j, k] = cls[b]
                            inst[i, j, k] = iid[b]
        if hit:
            continue
        # no voxel centre inside: claim the column under the box centre
        i = math.floor((cx - x0) / dx)
        j = math.floor((cy - y0) / dy)
        if not (0 <= i < nx and 0 <= j < ny):
            continue
        ka = max(0, math.floor((cz - Hh / 2 - z0) / dz))
        kb = min(nz - 1, math.floor((cz + Hh / 2 - z0) / dz - eps))
        for k in range(ka, kb + 1):
            sem[i, j, k] = cls[b]
            inst[i, j, k] = iid[b]


@njit(cache=True, inline='always')
def _camera_ray(u: int, v: int, A: np.ndarray, R: np.ndarray) -> tuple[float, float, float, float, float]:
    """Pixel (u, v)'s ray (rx, ry, 1) = A · (u, v, 1) in the optical frame and e = R · ray in the ego
    frame: (rx, ry, ex, ey, ez), in the numpy expressions' order of operations."""
    uf = np.float64(u)
    vf = np.float64(v)
    rx = (A[0, 0] * uf + A[0, 1] * vf) + A[0, 2]
    ry = (A[1, 1] * vf + A[1, 0] * uf) + A[1, 2]
    ex = (R[0, 0] * rx + R[0, 1] * ry) + R[0, 2]
    ey = (R[1, 0] * rx + R[1, 1] * ry) + R[1, 2]
    ez = (R[2, 0] * rx + R[2, 1] * ry) + R[2, 2]
    return rx, ry, ex, ey, ez


@njit(cache=True)
def camera_rays(H: int, W: int, A: np.ndarray, R: np.ndarray, height: float, ground_far: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                           np.ndarray, np.ndarray]:
    """A camera's per-pixel constants in two passes over its H × W pixels, in raster order.

    Pixel (u, v): ray (rx, ry, 1) = A · (u, v, 1) in the optical frame, e = R · ray in the ego
    frame, |ray| as float32, and the ground plane z = 0 at distance t = −height / e_z along the ray
    (where e_z < −1e-9; seen when t < ground_far: its inverse distance as float32). Returns
    ray_norm (H, W) f32, ground_inv (H, W) f32, ground_idx (pixels that see the ground), their t
    and e_x, e_y, and sky_idx (the other pixels) with their e (3, N) (the sky's directions). The float64 operations
    are those of the numpy expressions they replace, in the same order (a product by the ray's
    z = 1 is exact), so every value is the same bit for bit. The first pass counts the ground
    pixels, the second computes each ray again (the same operations: the same values) and files it,
    instead of keeping four full-image float64 arrays between them."""
    ray_norm = np.empty((H, W), np.float32)
    ground_inv = np.zeros((H, W), np.float32)
    n_ground = 0
    for v in range(H):
        for u in range(W):
            rx, ry, ex, ey, ez = _camera_ray(u, v, A, R)
            ray_norm[v, u] = np.float32(np.sqrt((rx * rx + ry * ry) + 1.0))
            t = -height / ez if ez < -1e-9 else np.inf
            if t < ground_far:
                ground_inv[v, u] = np.float32(1.0 / t)
                n_ground += 1
    ground_idx = np.empty(n_ground, np.int64)
    tt = np.empty(n_ground)
    gx = np.empty(n_ground)
    gy = np.empty(n_ground)
    sky_idx = np.empty(H * W - n_ground, np.int64)
    sky_dir = np.empty((3, H * W - n_ground))
    k = 0
    j = 0
    for v in range(H):
        for u in range(W):
            rx, ry, ex, ey, ez = _camera_ray(u, v, A, R)
            t = -height / ez if ez < -1e-9 else np.inf
            p = v * W + u
            if t < ground_far:
                ground_idx[k] = p
                tt[k] = t
                gx[k] = ex
                gy[k] = ey
                k += 1
            else:
                sky_idx[j] = p
                sky_dir[0, j] = ex
                sky_dir[1, j] = ey
                sky_dir[2, j] = ez
                j += 1
    return ray_norm, ground_inv, ground_idx, tt, gx, gy, sky_idx, sky_dir


def warm_up() -> None:
    """Compile these kernels (or load them from numba's cache) for the argument types the renderer
    and the ground truth pass, on tiny inputs: call it before forking rendering workers so that
    they share the compiled code instead of each compiling it."""
    f32, one = np.float32, np.ones
    depth_from_inverse(np.ones((1, 1), f32))
    sky_image(1, np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros((128, 128), f32),
              one(3, f32), one(3, f32), one(3, f32))
    zbuffer_face(np.zeros((1, 1), f32), np.zeros((1, 1), np.int32), np.zeros((1, 1), np.uint8), 0, 0, f32(0), f32(0),
                 f32(1), 0)
    camera_rays(1, 1, np.eye(3), np.eye(3), 1.0, 1000.0)
    voxelise_boxes(np.zeros((1, 1, 1), np.uint8), np.zeros((1, 1, 1), np.uint16), np.zeros((1, 3)), np.ones((1, 3)),
                   np.zeros(1), np.zeros(1, np.uint8), np.zeros(1, np.uint16), np.zeros(1, np.int64), np.zeros(1),
                   np.zeros(1), np.zeros(3), np.ones(3), 1e-6)
    camera_visibility(np.zeros(1, np.bool_), np.zeros(1, np.int64), np.zeros(1, np.int64), one(1, f32), one(1, f32),
                      one(1, f32), np.zeros(1, np.int32), one(1, f32), one(1, f32), np.zeros(0, np.int64),
                      np.zeros(0, f32), f32(0.1))

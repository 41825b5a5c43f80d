"""The renderer's compiled per-pixel passes (numba): the colour composition, one pass instead of some
forty numpy passes over full-image temporaries, the z-test of one rasterised face, a camera's
per-pixel rays and sky colours (`camera_rays`, `sky_image`), depth from inverse depth
(`depth_from_inverse`), and the ground truth's box loop (`voxelise_boxes`) and per-camera
visibility test (`camera_visibility`).

`compose_image` turns a rasterised camera (which face or ground cell each pixel sees, its depth)
into the float32 RGB values of the final image: ground texture from the world-anchored noise, face
texture and window / stripe patterns from the face's own 2-D coordinates, colour look-up ×
texture, distance haze, the precomputed sky and sensor grain. The renderer turns them into uint8
with `cv2.convertScaleAbs` (|x| rounded half to even, saturated), the numpy composition's own last
step: vectorised, it costs a sixth of what the same rounding cost per value inside the loop.

Every pixel goes through the float32 operations the numpy composition performed, in the same
order (float32 constants, no fused multiply-add, truncating texel indices, numpy's floored
`mod`), so the images are bit-identical to it: that is what `test/test_render_pinned.py` holds
them to. The haze factor exp(−depth / FOG) is computed by numpy outside the kernel (numpy's SIMD
expf and libm's may differ in the last bit).

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

from occ_ros.bag.world_mix import MAT_BARK, MAT_CLOTH, MAT_FACADE, MAT_FOLIAGE, MAT_STRIPES

_F = np.float32


@njit(cache=True, inline='always')
def _tex(noise: np.ndarray, row: np.float32, col: np.float32) -> np.float32:
    """Texel (⌊row⌋ mod 256, ⌊col⌋ mod 256) of a flat 256 × 256 texture, truncating toward zero
    as the int32 cast does."""
    r = np.int64(np.int32(row)) & 255
    c = np.int64(np.int32(col)) & 255
    return noise[(r << 8) | c]


_EXACT_QUOTIENT = 16777216.0      # 2**24: below this many b's the float64 path below is exact


@njit(cache=True, inline='always')
def fmod_f32(a: np.float32, b: np.float32) -> np.float32:
    """C's fmodf(a, b) (the remainder with the sign of a, always exact) for float32 a and b > 0,
    without the libm call that cost a sixth of the compose pass.

    In float64: n = ⌊|a| / b⌋ is off by at most one and corrected below; with |a| < 2²⁴·b,
    n < 2²⁴ so n·b (≤ 48 significant bits) is exact, and |a| − n·b, a multiple of b's float32
    ulp smaller than 3·b, is exact too, as is the correction by ±b; the result, smaller than b
    and on that ulp grid, is a float32. Beyond 2²⁴·b, b ≤ 0 or a non-finite a: fmodf itself.
    `test/test_render_pinned.py` compares it with numpy's fmod on float32 edge cases."""
    x = np.float64(abs(a))
    y = np.float64(b)
    if not (y > 0.0 and x < _EXACT_QUOTIENT * y):
        return _F(np.fmod(a, b))
    r = x - np.floor(x / y) * y
    if r < 0.0:
        r += y
    elif r >= y:
        r -= y
    return _F(np.copysign(r, np.float64(a)))       # the sign of a, −0.0 included


@njit(cache=True, inline='always')
def _fmod(a: np.float32, b: np.float32) -> np.float32:
    """numpy's float32 `mod` (floored: the result has the sign of b)."""
    r = fmod_f32(a, b)
    if r != 0:
        if (b < 0) != (r < 0):
            r = _F(r + b)
    return r


@njit(cache=True, inline='always')
def _store(out: np.ndarray, p: int, x0: np.float32, x1: np.float32, x2: np.float32) -> None:
    out[p, 0] = x0
    out[p, 1] = x1
    out[p, 2] = x2


@njit(cache=True)
def compose_image(out: np.ndarray, W: int, f: np.ndarray, sky: np.ndarray, grain: np.ndarray, oy: int, ox: int,
                  lut: np.ndarray, haze: np.ndarray, noise: np.ndarray, noise_fine: np.ndarray,
                  fid: np.ndarray, ground_idx: np.ndarray, ground_x: np.ndarray, ground_y: np.ndarray,
                  pose: np.ndarray, raster: np.ndarray, raster_x0: float, raster_y0: float, inv_res: float,
                  outside: int, g0: int, depth: np.ndarray, A: np.ndarray, axes: np.ndarray,
                  face_mat: np.ndarray, nface: int) -> None:
    """Write the (H·W, 3) float32 values `out` of one camera's image, pixel by pixel in raster order
    (to uint8 with `cv2.convertScaleAbs`).

    A pixel shows face fid[p] when fid[p] ≥ 0; else the ground when p is in `ground_idx`
    (ascending; ground_x / ground_y: the ego-frame ground point of each); else the sky.
    f: exp(−depth / FOG) per pixel. sky: (H·W, 3) sky colour. grain: sensor grain, read at
    (oy + v, ox + u). lut: colour rows — faces [0, nface), the faces' window / stripe colours
    [nface, 2·nface), ground raster values [g0, g0 + 128). pose: (4, 4) ego → world. raster: the
    world's ground raster (class | paint bits; `outside` beyond it), cell ⌊(x − x0)·inv_res⌋.
    A: float32 inverse intrinsics; axes: (F, 8) face texture axes in the optical frame.
    """
    n = out.shape[0]
    h0, h1, h2 = haze[0], haze[1], haze[2]
    c, s, tx, ty = pose[0, 0], pose[1, 0], pose[0, 3], pose[1, 3]
    rh, rw = raster.shape
    a00, a01, a02, a11, a12 = A[0, 0], A[0, 1], A[0, 2], A[1, 1], A[1, 2]
    ng = ground_idx.shape[0]
    kg = 0
    for v in range(n // W):
        for u in range(W):
            p = v * W + u
            g_0 = grain[oy + v, ox + u, 0]
            g_1 = grain[oy + v, ox + u, 1]
            g_2 = grain[oy + v, ox + u, 2]
            on_ground = kg < ng and ground_idx[kg] == p
            fi = fid[p]
            if fi < 0 and not on_ground:
                # sky: its LUT row is black and its haze weight 0, so the image is sky + grain
                _store(out, p, sky[p, 0] + g_0, sky[p, 1] + g_1, sky[p, 2] + g_2)
                continue
            if fi < 0:
                # ground: world-anchored coarse × fine noise, colour of the ground raster value
                gx = ground_x[kg]
                gy = ground_y[kg]
                wx = tx + c * gx - s * gy
                wy = ty + s * gx + c * gy
                ix = np.int64(np.floor((wx - raster_x0) * inv_res))
                iy = np.int64(np.floor((wy - raster_y0) * inv_res))
                cell = raster[iy, ix] if (ix >= 0 and ix < rw and iy >= 0 and iy < rh) else outside
                wxf = _F(wx)
                wyf = _F(wy)
                m = _F(0.82) + _F(0.3) * _tex(noise, wyf * _F(2.0), wxf * _F(2.0))
                m = m * (_F(0.88) + _F(0.24) * _tex(noise_fine, wyf * _F(12.0), wxf * _F(12.0)))
                row = g0 + np.int64(cell)
            else:
                # a face: its coordinates (l1, l2) in metres from the pixel's ray and depth
                uf = _F(u)
                vf = _F(v)
                z = depth[p]
                px = (a00 * uf + a01 * vf + a02) * z
                py = (a11 * vf + a12) * z
                l1 = px * axes[fi, 0] + py * axes[fi, 1] + z * axes[fi, 2] + axes[fi, 3]
                l2 = px * axes[fi, 4] + py * axes[fi, 5] + z * axes[fi, 6] + axes[fi, 7]
                n1 = _tex(noise, l2 * _F(4.0), l1 * _F(4.0))
                n2 = _tex(noise_fine, l2 * _F(20.0), l1 * _F(20.0))
                mat = face_mat[fi]
                if mat == MAT_FOLIAGE:
                    m = _F(0.55) + _F(0.55) * n2 + _F(0.25) * n1
                elif mat == MAT_BARK or mat == MAT_CLOTH:
                    m = _F(0.78) + _F(0.4) * n2
                else:
                    m = _F(0.9) + _F(0.12) * n1 + _F(0.08) * n2
                row = np.int64(fi)
                if mat == MAT_FACADE:
                    b_ = _fmod(l2, _F(3.3))
                    if b_ > _F(1.0) and b_ < _F(2.5) and l2 > _F(0.5):
                        a_ = _fmod(l1, _F(3.2))
                        if a_ > _F(0.9) and a_ < _F(2.4):
                            row += nface
                elif mat == MAT_STRIPES:
                    if _fmod(l1 * _F(0.7) + l2 * _F(1.4), _F(1.0)) < _F(0.5):
                        row += nface
            if on_ground:
                kg += 1
            fp = f[p]
            mod = m * fp
            f1 = fp - _F(1.0)
            _store(out, p, (lut[row, 0] * mod - f1 * h0) + g_0, (lut[row, 1] * mod - f1 * h1) + g_1,
                   (lut[row, 2] * mod - f1 * h2) + g_2)


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
def ztest_pixel(inv: np.ndarray, fid: np.ndarray, v: int, u: int, c0: np.float32, c1: np.float32, c2: np.float32,
                k: int) -> int:
    """Depth-test pixel (v, u) of a face whose inverse depth is 1/z = c0·u + c1·v + c2 (float32, in
    that order of operations: (c0·u + c1·v) + c2): where it is greater than `inv`'s, write it to
    `inv` and `k` to `fid` and return 1, else 0."""
    r = (c0 * np.float32(u) + c1 * np.float32(v)) + c2
    if r > inv[v, u]:
        inv[v, u] = r
        fid[v, u] = k
        return 1
    return 0


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


@njit(cache=True)
def camera_rays(H: int, W: int, A: np.ndarray, R: np.ndarray, height: float, ground_far: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                           np.ndarray, np.ndarray]:
    """A camera's per-pixel constants in one pass over its H × W pixels, in raster order.

    Pixel (u, v): ray (rx, ry, 1) = A · (u, v, 1) in the optical frame, e = R · ray in the ego
    frame, |ray| as float32, and the ground plane z = 0 at distance t = −height / e_z along the ray
    (where e_z < −1e-9; seen when t < ground_far: its inverse distance as float32). Returns
    ray_norm (H, W) f32, ground_inv (H, W) f32, ground_idx (pixels that see the ground), their t
    and e_x, e_y, and sky_idx (the other pixels) with their e (3, N) (the sky's directions). The float64 operations
    are those of the numpy expressions they replace, in the same order (a product by the ray's
    z = 1 is exact), so every value is the same bit for bit."""
    a00, a01, a02, a10, a11, a12 = A[0, 0], A[0, 1], A[0, 2], A[1, 0], A[1, 1], A[1, 2]
    ray_norm = np.empty((H, W), np.float32)
    ground_inv = np.zeros((H, W), np.float32)
    t_all = np.empty(H * W)
    ex_all = np.empty(H * W)
    ey_all = np.empty(H * W)
    ez_all = np.empty(H * W)
    n_ground = 0
    for v in range(H):
        vf = np.float64(v)
        for u in range(W):
            uf = np.float64(u)
            rx = (a00 * uf + a01 * vf) + a02
            ry = (a11 * vf + a10 * uf) + a12
            ex = (R[0, 0] * rx + R[0, 1] * ry) + R[0, 2]
            ey = (R[1, 0] * rx + R[1, 1] * ry) + R[1, 2]
            ez = (R[2, 0] * rx + R[2, 1] * ry) + R[2, 2]
            ray_norm[v, u] = np.float32(np.sqrt((rx * rx + ry * ry) + 1.0))
            t = -height / ez if ez < -1e-9 else np.inf
            p = v * W + u
            t_all[p] = t
            ex_all[p] = ex
            ey_all[p] = ey
            ez_all[p] = ez
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
    for p in range(H * W):
        if t_all[p] < ground_far:
            ground_idx[k] = p
            tt[k] = t_all[p]
            gx[k] = ex_all[p]
            gy[k] = ey_all[p]
            k += 1
        else:
            sky_idx[j] = p
            sky_dir[0, j] = ex_all[p]
            sky_dir[1, j] = ey_all[p]
            sky_dir[2, j] = ez_all[p]
            j += 1
    return ray_norm, ground_inv, ground_idx, tt, gx, gy, sky_idx, sky_dir


def warm_up() -> None:
    """Compile `compose_image` (or load it from numba's cache) for the argument types the renderer
    passes, on a one-pixel image: call it before forking rendering workers so that they share the
    compiled code instead of each compiling it."""
    f32, one = np.float32, np.ones
    compose_image(np.zeros((1, 3), f32), 1, one(1, f32), one((1, 3), f32), one((1, 1, 3), f32), 0, 0,
                  one((1, 3), f32), one(3, f32), one(65536, f32), one(65536, f32), np.full(1, -1, np.int32),
                  np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.eye(4), np.zeros((1, 1), np.uint8), 0.0,
                  0.0, 5.0, 0, 0, one(1, f32), np.eye(3, dtype=f32), np.zeros((0, 8), f32), np.zeros(0, np.uint8), 0)
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

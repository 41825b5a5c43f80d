"""The rasteriser's per-face loop, compiled (numba): clip, pixel box, convex fill, z-test.

`render.rasterise` culls and projects the faces of a frame's boxes with numpy; what is left per
face — Sutherland–Hodgman clipping of the faces that cross a frustum plane, the pixel box, the
4-fractional-bit vertices, OpenCV's convex fill and the z-test — ran as a Python loop at some
30 µs of interpreter per face. Here it is one compiled call per camera, with the same arithmetic:

- `clip_faces`: the float64 Sutherland–Hodgman clip of `render._clip_polygon`, the same
  operations in the same order (d = ((x·n0 + y·n1) + z·n2) + c; t = d_i / (d_i − d_j);
  P_i + t·(P_j − P_i)). The projection of the clipped polygons stays numpy's matrix product
  (whose BLAS kernel may fuse multiply-adds), batched: one product for all faces. The buffers
  hold any polygon's clip (rounding can make a sliver non-convex: more than 4 + 6 vertices).
- `convex_cover` / `fill_convex_poly`: OpenCV's `cv::fillConvexPoly(img, pts, color, LINE_8,
  shift=4)` on a one-channel image, re-implemented from `modules/imgproc/src/drawing.cpp` of opencv/opencv:
  `FillConvexPoly` (the outline drawn edge by edge with `Line2`, then the scanline walk of the
  two edges from the topmost vertex in XY_SHIFT = 16 fixed point, C's truncating divisions),
  `Line2` (the 8-connected line between fixed-point end points) and `clipLine` (the end points
  clipped against the image scaled by 2^16). `test/test_raster_fill.py` holds it to cv2 itself.
- `raster_faces`: per face the pixel box (math.floor / ceil of the float64 bounds, clamped to
  the image), the vertices `int32((uv − (u0, v0))·16 + 0.5)` (truncation toward zero), the fill's
  cover (row spans and outline pixels, `convex_cover`) and the z-test of each of its pixels
  (`compose.ztest_span` along each row span, in a loop that vectorises; `compose.ztest_pixel` on
  each outline pixel) — what the Python loop did with a mask and `compose.zbuffer_face`, without the mask;
  returns the faces that won a pixel, in order (face k of the result is the k written to `fid`).

So the z-buffer, the face ids and the per-face tables are bit-identical to the Python loop
(`render.rasterise(..., reference=True)` keeps it, `test/test_raster_fill.py` compares them).
Compiled on first use (cached in __pycache__); `warm_up()` compiles every renderer kernel.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from occ_ros.core.errors import ConfigError
from occ_ros.bag.colour import warm_up as _colour_warm_up
from occ_ros.bag.compose import warm_up as _compose_warm_up
from occ_ros.bag.compose import ztest_pixel, ztest_span

XY_SHIFT = 16           # drawing.cpp: fixed point of the edge walk and of Line2
XY_ONE = 1 << XY_SHIFT
SHIFT = 4               # fractional bits of the vertices the rasteriser passes


@njit(cache=True)
def _tdiv(a: int, b: int) -> int:
    """C's integer division (truncating toward zero) of int64 a by b."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q


@njit(cache=True)
def _clip_line(w: int, h: int, x1: int, y1: int, x2: int, y2: int) -> tuple[bool, int, int, int, int]:
    """drawing.cpp `clipLine(Size2l, Point2l&, Point2l&)`: clip the segment to [0, w−1] × [0, h−1]
    (outcodes, first against the top/bottom edge, then left/right; C's truncating division).
    Returns (whether any of it is inside, the clipped end points)."""
    right = w - 1
    bottom = h - 1
    if w <= 0 or h <= 0:
        return False, x1, y1, x2, y2
    c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8
    c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += _tdiv((a - y1) * (x2 - x1), y2 - y1)
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += _tdiv((a - y2) * (x2 - x1), y2 - y1)
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += _tdiv((a - x1) * (y2 - y1), x2 - x1)
                x1 = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += _tdiv((a - x2) * (y2 - y1), x2 - x1)
                x2 = a
                c2 = 0
    return (c1 | c2) == 0, x1, y1, x2, y2


@njit(cache=True)
def _line2(w: int, h: int, x1: int, y1: int, x2: int, y2: int, ox: np.ndarray, oy: np.ndarray, npt: int) -> int:
    """drawing.cpp `Line2`: the 8-connected line between two XY_SHIFT fixed-point end points,
    clipped by `clipLine` to the image scaled by 2^XY_SHIFT, stepped along its major axis from
    the end with the smaller major coordinate; the far end point is plotted first, rounded.
    Appends the pixels inside the w × h image to (ox, oy) from index npt; returns the new count."""
    inside, x1, y1, x2, y2 = _clip_line(w << XY_SHIFT, h << XY_SHIFT, x1, y1, x2, y2)
    if not inside:
        return npt
    dx = x2 - x1
    dy = y2 - y1
    steep = not abs(dx) > abs(dy)               # step along y (Line2's `else` branch): transpose
    if steep:
        x1, y1, x2, y2, dx, dy = y1, x1, y2, x2, dy, dx
    ax = abs(dx)
    if dx < 0:                                  # walk from the end with the smaller major coordinate
        dy = -dy
        x1, y1, x2, y2 = x2, y2, x1, y1
    step = _tdiv(dy << XY_SHIFT, ax | 1)
    ecount = (x2 - x1) >> XY_SHIFT
    x1 += XY_ONE >> 1
    y1 += XY_ONE >> 1
    # the far end point first (rounded), then ecount + 1 steps from the near one; one plotting
    # site (a helper taking the arrays would cost a reference count per pixel)
    for s in range(-1, ecount + 1):
        if s < 0:
            a = (x2 + (XY_ONE >> 1)) >> XY_SHIFT
            b = (y2 + (XY_ONE >> 1)) >> XY_SHIFT
        else:
            a = (x1 >> XY_SHIFT) + s
            b = (y1 + s * step) >> XY_SHIFT
        x, y = (b, a) if steep else (a, b)
        if 0 <= x < w and 0 <= y < h:          # ICV_PUT_POINT
            ox[npt] = x
            oy[npt] = y
            npt += 1
    return npt


@njit(cache=True)
def _next_edge(px: np.ndarray, py: np.ndarray, n: int, y: int, idx0: int, di: int, edges: int, ye: int, x: int,
               dx: int) -> tuple[int, int, int, int, int]:
    """FillConvexPoly's edge advance: from vertex idx0 step by di (mod n) to the first vertex below
    row y, spending one of the `edges` budget per step (C: `for (; edges-- > 0; )`). Returns
    (edges, vertex, its row ye, the edge's x at row y and its dx per row, XY_SHIFT fixed point);
    ye, x, dx unchanged when the budget runs out."""
    delta = (1 << SHIFT) >> 1
    up = XY_SHIFT - SHIFT
    idx = idx0 + di
    if idx >= n:
        idx -= n
    while True:
        more = edges > 0
        edges -= 1
        if not more:
            return edges, idx0, ye, x, dx
        ty = (np.int64(py[idx]) + delta) >> SHIFT
        if ty > y:
            xs = np.int64(px[idx0]) << up
            xe = np.int64(px[idx]) << up
            return edges, idx, ty, xs, _tdiv((xe - xs) * 2 + (ty - y), 2 * (ty - y))
        idx0 = idx
        idx += di
        if idx >= n:
            idx -= n


@njit(cache=True)
def convex_cover(h: int, w: int, px: np.ndarray, py: np.ndarray, n: int, span_l: np.ndarray, span_r: np.ndarray,
                 ox: np.ndarray, oy: np.ndarray) -> int:
    """The pixels `cv2.fillConvexPoly(img, pts, color, lineType=cv2.LINE_8, shift=4)` sets in an
    h × w image, for the n vertices (px[i], py[i]) with 4 fractional bits (drawing.cpp
    `FillConvexPoly` for line_type 8: the closed outline by `Line2`, then from the topmost
    vertex the left and right edges walked one scanline at a time — each edge's x and dx in
    XY_SHIFT fixed point, dx = ((xe − xs)·2 + Δy) / (2·Δy) truncated, rows ⌊(y + 8) / 16⌋ — and
    each row's span [(x_l + ½) >> 16, (x_r + ½) >> 16] clipped to the image).

    The cover is the union of the row spans span_l[y]..span_r[y] (written for the rows the walk
    fills; the caller initialises the others empty) and the outline pixels (ox[i], oy[i]),
    i < the returned count (ox, oy: room for n · (max(h, w) + 2))."""
    npt = np.int64(0)                  # int64, not a literal: one compiled _line2 / _next_edge each
    delta = (1 << SHIFT) >> 1
    up = XY_SHIFT - SHIFT
    p0x = np.int64(px[n - 1]) << up
    p0y = np.int64(py[n - 1]) << up
    xmin = xmax = np.int64(px[0])
    ymin = ymax = np.int64(py[0])
    imin = np.int64(0)
    for i in range(n):
        x = np.int64(px[i])
        y = np.int64(py[i])
        if y < ymin:
            ymin = y
            imin = i
        ymax = max(ymax, y)
        xmax = max(xmax, x)
        xmin = min(xmin, x)
        qx = x << up
        qy = y << up
        npt = _line2(w, h, p0x, p0y, qx, qy, ox, oy, npt)
        p0x = qx
        p0y = qy
    xmin = (xmin + delta) >> SHIFT
    xmax = (xmax + delta) >> SHIFT
    ymin = (ymin + delta) >> SHIFT
    ymax = (ymax + delta) >> SHIFT
    if n < 3 or xmax < 0 or ymax < 0 or xmin >= w or ymin >= h:
        return npt
    ymax = min(ymax, h - 1)
    # the two edges walked down from the topmost vertex: 0 forwards, 1 backwards through the vertices
    i0 = i1 = imin
    ye0 = ye1 = ymin
    x0 = x1 = -XY_ONE
    dx0 = dx1 = np.int64(0)
    edges = n
    y = ymin
    while True:
        if y >= ye0:
            edges, i0, ye0, x0, dx0 = _next_edge(px, py, n, y, i0, np.int64(1), edges, ye0, x0, dx0)
        if y >= ye1:
            edges, i1, ye1, x1, dx1 = _next_edge(px, py, n, y, i1, n - 1, edges, ye1, x1, dx1)
        if edges < 0:
            break
        if y >= 0:
            xl, xr = (x1, x0) if x0 > x1 else (x0, x1)
            xx1 = (xl + (XY_ONE >> 1)) >> XY_SHIFT
            xx2 = (xr + (XY_ONE >> 1)) >> XY_SHIFT
            if xx2 >= 0 and xx1 < w:
                span_l[y] = max(xx1, 0)
                span_r[y] = min(xx2, w - 1)
        x0 += dx0
        x1 += dx1
        y += 1
        if y > ymax:
            break
    return npt


@njit(cache=True)
def fill_convex_poly(img: np.ndarray, px: np.ndarray, py: np.ndarray, n: int, color: int) -> None:
    """Draw what `cv2.fillConvexPoly(img, pts, color, lineType=cv2.LINE_8, shift=4)` draws into the
    2-D image `img` (vertices (px[i], py[i]) with 4 fractional bits): `convex_cover`, painted."""
    h, w = img.shape
    span_l = np.empty(h, np.int64)
    span_r = np.empty(h, np.int64)
    for i in range(h):
        span_l[i] = 0
        span_r[i] = -1
    room = n * (max(h, w) + 2)
    ox = np.empty(room, np.int64)
    oy = np.empty(room, np.int64)
    npt = convex_cover(h, w, px, py, n, span_l, span_r, ox, oy)
    for y in range(h):
        for x in range(span_l[y], span_r[y] + 1):
            img[y, x] = color
    for i in range(npt):
        img[oy[i], ox[i]] = color


def clip_faces(verts: np.ndarray, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sutherland–Hodgman clip of each 3-D polygon verts[m] (M, K, 3) against the half-spaces
    n·P + c ≥ 0 (planes (P, 4)), in float64 with `render._clip_polygon`'s operations.
    Returns the clipped polygons (M, V, 3), zero-padded, V the largest vertex count, and the counts.

    A clip of a convex k-gon adds at most one vertex; rounding can make a sliver polygon
    slightly non-convex, so the buffers hold what any polygon can reach: a clip keeps at most
    k − c/2 vertices and adds c at its c sign changes (c ≤ k), at most k + k // 2."""
    room = verts.shape[1]
    for _ in range(len(planes)):
        room += room // 2
    flat, counts = _clip_faces(np.ascontiguousarray(verts, np.float64), np.ascontiguousarray(planes, np.float64),
                               room)
    return flat.reshape(len(verts), room, 3)[:, :max(1, int(counts.max(initial=0)))], counts


@njit(cache=True)
def _clip_faces(verts: np.ndarray, planes: np.ndarray, room: int) -> tuple[np.ndarray, np.ndarray]:
    """`clip_faces`' loop: the polygons flat (M · room · 3, zero-padded) and their vertex counts.
    (Flat buffers and scalar loops: numpy constructors and methods are slow to compile.)"""
    m_all = verts.shape[0]
    out = np.empty(m_all * room * 3)
    counts = np.empty(m_all, np.int64)
    a = np.empty(room * 3)
    b = np.empty(room * 3)
    d = np.empty(room)
    for m in range(m_all):
        k = verts.shape[1]
        for i in range(k):
            for r in range(3):
                a[3 * i + r] = verts[m, i, r]
        for p in range(planes.shape[0]):
            if k == 0:
                break
            n0, n1, n2, c = planes[p, 0], planes[p, 1], planes[p, 2], planes[p, 3]
            inside = True
            for i in range(k):
                d[i] = ((a[3 * i] * n0 + a[3 * i + 1] * n1) + a[3 * i + 2] * n2) + c
                if not d[i] >= 0:
                    inside = False
            if inside:
                continue
            kk = 0
            for i in range(k):
                j = i + 1 if i + 1 < k else 0
                if d[i] >= 0:
                    for r in range(3):
                        b[3 * kk + r] = a[3 * i + r]
                    kk += 1
                if (d[i] >= 0) != (d[j] >= 0):
                    t = d[i] / (d[i] - d[j])
                    for r in range(3):
                        b[3 * kk + r] = a[3 * i + r] + t * (a[3 * j + r] - a[3 * i + r])
                    kk += 1
            k = kk
            for q in range(3 * k):
                a[q] = b[q]
        counts[m] = k
        base = m * room * 3
        for q in range(room * 3):
            out[base + q] = a[q] if q < 3 * k else 0.0
    return out, counts


@njit(cache=True)
def raster_faces(inv: np.ndarray, fid: np.ndarray, uv_all: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 slot: np.ndarray, uv_clip: np.ndarray, n_clip: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """Fill and depth-test faces 0..M−1 in order into `inv` / `fid` (H, W).

    A face with slot[m] < 0 is the quad uv_all[m] (4, 2) with pixel bounds lo[m], hi[m]; else the
    clipped polygon uv_clip[slot[m], :n_clip[slot[m]]] (dropped with fewer than 3 vertices).
    coefs: (M, 3) float32, 1/z = c0·u + c1·v + c2. Returns the indices m of the faces that won
    at least one pixel, in order: the k-th of them is the face id k written to `fid`."""
    H, W = inv.shape
    inv_flat = inv.reshape(-1)
    fid_flat = fid.reshape(-1)
    m_all = uv_all.shape[0]
    won = np.empty(m_all, np.int64)
    nwon = 0
    span_l = np.empty(H, np.int64)            # rows start empty (l > r); reset after each face
    span_r = np.empty(H, np.int64)
    for i in range(H):
        span_l[i] = 0
        span_r[i] = -1
    nv = max(uv_all.shape[1], uv_clip.shape[1])             # most vertices of a face
    ox = np.empty(nv * (max(H, W) + 2), np.int64)            # outline pixels of one face
    oy = np.empty(nv * (max(H, W) + 2), np.int64)
    px = np.empty(nv, np.int64)
    py = np.empty(nv, np.int64)
    for m in range(m_all):
        s = slot[m]
        if s >= 0:
            n = n_clip[s]
            if n < 3:
                continue
            uv = uv_clip[s]
            umin = umax = uv[0, 0]
            vmin = vmax = uv[0, 1]
            for i in range(1, n):
                umin = min(umin, uv[i, 0])
                umax = max(umax, uv[i, 0])
                vmin = min(vmin, uv[i, 1])
                vmax = max(vmax, uv[i, 1])
        else:
            uv = uv_all[m]
            n = uv.shape[0]
            umin, vmin, umax, vmax = lo[m, 0], lo[m, 1], hi[m, 0], hi[m, 1]
        if not (math.isfinite(umin) and math.isfinite(umax) and math.isfinite(vmin) and math.isfinite(vmax)):
            raise ConfigError('rasterise: a box face projects to a non-finite pixel coordinate '
                              '(a box with a non-finite centre, size or yaw?)')
        u0, u1 = max(0, math.floor(umin)), min(W - 1, math.ceil(umax))
        v0, v1 = max(0, math.floor(vmin)), min(H - 1, math.ceil(vmax))
        if u0 > u1 or v0 > v1:
            continue
        for i in range(n):
            px[i] = np.int32((uv[i, 0] - np.float64(u0)) * 16.0 + 0.5)
            py[i] = np.int32((uv[i, 1] - np.float64(v0)) * 16.0 + 0.5)
        h, w = v1 - v0 + 1, u1 - u0 + 1
        npt = convex_cover(h, w, px, py, n, span_l, span_r, ox, oy)
        c0, c1, c2 = coefs[m, 0], coefs[m, 1], coefs[m, 2]
        hit = 0
        for i in range(h):                       # the row spans, then the outline (z-testing a
            if span_l[i] <= span_r[i]:           # pixel twice changes nothing)
                hit += ztest_span(inv_flat, fid_flat, W, v0 + i, u0 + span_l[i], u0 + span_r[i], c0, c1, c2, nwon)
            span_l[i] = 0
            span_r[i] = -1
        for i in range(npt):
            hit += ztest_pixel(inv, fid, v0 + oy[i], u0 + ox[i], c0, c1, c2, nwon)
        if hit:
            won[nwon] = m
            nwon += 1
    return won[:nwon]


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel of the renderer — the colour pass of
    `colour`, the z-test and other passes of `compose`, the face loop here — on tiny inputs, before
    rendering workers fork."""
    _colour_warm_up()
    _compose_warm_up()
    f32 = np.float32
    verts = np.array([[[-1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]])
    polys, counts = clip_faces(verts, np.array([[1.0, 0.0, 0.0, 0.0]]))
    uv = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    raster_faces(np.zeros((2, 2), f32), np.full((2, 2), -1, np.int32), uv, np.zeros((1, 2)), np.ones((1, 2)),
                 np.full(1, -1, np.int64), polys[:, :, :2].copy(), counts, np.ones((1, 3), f32))

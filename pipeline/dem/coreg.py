"""Coregistration of a DEM time series: pairwise Nuth & Kääb, then a bundle adjustment.

**Pairwise** (Nuth & Kääb 2011, The Cryosphere 5, 271-290). For a DEM B displaced by
(dx, dy) and raised by dz relative to a reference A, the elevation difference on stable
ground is, to first order,

    dh = B(p) - A(p) = dz - dA/dx * dx - dA/dy * dy

Nuth & Kääb write this as dh / tan(slope) = a cos(b - aspect) + c, with a the shift's
magnitude and b its direction; the linear form above is the same relation in Cartesian
components, solved here by least squares. As in their method the fit is iterated:
B is resampled at the shifted positions (bilinear, only at the sample points), the
remaining residual shift is solved for, and the loop stops when the update falls below
``convergence_m``. Each iteration drops samples beyond ``outlier_nsigma`` robust sigmas
(NMAD) from the median, which removes changing ground, clouds and snow. Stable ground is
valid in both DEMs, matched (matchtag 1) and of slope between ``min_slope_deg`` and
``max_slope_deg`` for the horizontal solve.

**Bundle adjustment** (as in Dai et al. 2025 and the DEMChangeDetection code). Each pair
(A, B) measures the relative displacement d_AB = D_B - D_A of the per-DEM absolute
displacements D. All pairs are solved jointly by weighted least squares with a weak
prior (D ~ N(0, ``prior_sigma_m``)) and a zero-mean constraint, x, y and z separately.
Pairs whose residual exceeds ``residual_reject_nsigma`` robust sigmas are dropped and the
system re-solved; DEMs whose pairs are poor (median NMAD above ``max_dem_nmad_m``, most
pixels far off the stack) are dropped with a reason. The result is each DEM's displacement
relative to the set's mean: the corrected DEM is B(p + (dx, dy)) - dz.

Conventions: x east, y north, metres in EPSG:3413; arrays are north-up rasters (row 0 at
the top), so +y is -row.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import ndimage

from pipeline.config import CoregConfig
from pipeline.dem.terrain import nan_gaussian

NMAD_K = 1.4826


def nmad(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan")
    return float(NMAD_K * np.median(np.abs(a - np.median(a))))


@dataclass
class PairFit:
    """Displacement of DEM ``j`` relative to DEM ``i`` (metres)."""

    i: int
    j: int
    dx: float = np.nan
    dy: float = np.nan
    dz: float = np.nan
    nmad_m: float = np.nan  # spread of the residual dh on stable ground
    sigma_dx: float = np.nan  # formal 1-sigma of the estimates, inflated for spatially
    sigma_dy: float = np.nan  # correlated errors (independent samples ~ overlap area /
    sigma_dz: float = np.nan  # correlation area)
    n_used: int = 0
    iterations: int = 0
    ok: bool = False
    reason: str = ""


@numba.njit(cache=True, nogil=True, inline="always")
def _bilinear_one(z, r, c, clamp):
    """z at (r, c), pixel units, bilinear. Outside the grid: NaN, or with ``clamp`` the
    nearest edge value; next to nodata: NaN (as scipy's map_coordinates with order 1)."""
    h, w = z.shape
    if clamp:
        r = min(max(r, 0.0), h - 1.0)
        c = min(max(c, 0.0), w - 1.0)
    elif r < 0.0 or c < 0.0 or r > h - 1.0 or c > w - 1.0:
        return np.nan
    r0 = min(int(r), h - 2) if h > 1 else 0
    c0 = min(int(c), w - 2) if w > 1 else 0
    fr = r - r0
    fc = c - c0
    r1 = min(r0 + 1, h - 1)
    c1 = min(c0 + 1, w - 1)
    return ((1.0 - fr) * ((1.0 - fc) * z[r0, c0] + fc * z[r0, c1])
            + fr * ((1.0 - fc) * z[r1, c0] + fc * z[r1, c1]))


@numba.njit(cache=True, nogil=True)
def _bilinear(z, rows, cols, dr, dc, clamp, f, out):
    """z at the points (rows + dr, cols + dc), without converting the whole grid for each
    call as scipy's map_coordinates does. With f > 1, z is a grid of f x f blocks and the
    points are full-resolution pixel coordinates (block centres sit at (k + 0.5) f - 0.5)."""
    if f == 1:
        for k in range(rows.size):
            out[k] = _bilinear_one(z, rows[k] + dr, cols[k] + dc, clamp)
    else:
        for k in range(rows.size):
            out[k] = _bilinear_one(z, (rows[k] + dr + 0.5) / f - 0.5, (cols[k] + dc + 0.5) / f - 0.5, clamp)
    return out


@numba.njit(cache=True, nogil=True)
def _shift_grid(z, dr, dc, out):
    """Every pixel (r, c) of ``out`` is z at (r + dr, c + dc), bilinear."""
    h, w = out.shape
    for r in range(h):
        for c in range(w):
            out[r, c] = _bilinear_one(z, r + dr, c + dc, False)
    return out


def bilinear(z: np.ndarray, rows: np.ndarray, cols: np.ndarray, dr: float = 0.0, dc: float = 0.0,
             clamp: bool = False, f: int = 1) -> np.ndarray:
    """``z`` at the points (rows + dr, cols + dc) (pixel units, float64), bilinear; with
    ``f`` > 1, ``z`` is on the grid of f x f blocks and the points at full resolution."""
    rows = np.ascontiguousarray(rows, np.float64)
    cols = np.ascontiguousarray(cols, np.float64)
    return _bilinear(z, rows, cols, float(dr), float(dc), clamp, int(f), np.empty(rows.size, np.float64))


@dataclass
class PreparedDem:
    """What the pairwise fit needs of a DEM, computed once per DEM rather than per pair: its
    random stable candidate pixels (finite, not steep, off the edge), the surface and the
    gradients of its smoothed surface at them, and the coarse low-pass that defines its
    high-passed surface (z - centre - low) anywhere."""

    z: np.ndarray  # elevations as read (NaN = nodata)
    candidates: np.ndarray  # random-order flat indices of its stable pixels
    values: dict[str, np.ndarray]  # "raw"/"hp": the surface at the candidates
    grads: dict[str, tuple[np.ndarray, np.ndarray]]  # "raw"/"hp": (d/dx east, d/dy north) at the candidates
    low: np.ndarray | None = None  # low-pass of z - centre on a grid coarsened f times (None: no high-pass)
    f: int = 1
    centre: float = 0.0

    def at(self, kind: str, rows: np.ndarray, cols: np.ndarray, dr: float = 0.0, dc: float = 0.0) -> np.ndarray:
        """Surface ``kind`` ("raw" or "hp") at (rows + dr, cols + dc), pixel units."""
        v = bilinear(self.z, rows, cols, dr, dc)
        if kind == "hp":
            v -= self.centre + self.low_at(rows, cols, dr, dc)
        return v

    def highpassed(self) -> np.ndarray:
        """The whole high-passed grid (the fit never needs it; for comparisons)."""
        rows, cols = np.mgrid[0 : self.z.shape[0], 0 : self.z.shape[1]]
        return self.at("hp", rows.ravel(), cols.ravel()).reshape(self.z.shape).astype(np.float32)

    def low_at(self, rows: np.ndarray, cols: np.ndarray, dr: float = 0.0, dc: float = 0.0) -> np.ndarray:
        """The low-pass at full-resolution pixel coordinates (rows + dr, cols + dc)."""
        return bilinear(self.low, rows, cols, dr, dc, clamp=True, f=self.f)


@numba.njit(cache=True, nogil=True)
def _block_sums(z, f, centre, num, den):
    """Sums of z - centre over the finite pixels of each f x f block, and their counts (one
    pass over the grid; ``num``/``den`` zeroed, shape ceil(h / f) x ceil(w / f))."""
    h, w = z.shape
    for r in range(h):
        br = r // f
        for c in range(w):
            v = z[r, c]
            if np.isfinite(v):
                num[br, c // f] += v - centre
                den[br, c // f] += 1.0


def _coarse_gaussian(z: np.ndarray, f: int, sigma_px: float, centre: float) -> np.ndarray:
    """The NaN-aware Gaussian low-pass (``sigma_px`` full-resolution pixels) of z - centre on
    the grid of f x f block means: normalised convolution of the block sums; NaN where no
    finite pixel lies within reach."""
    h, w = z.shape
    num = np.zeros((-(-h // f), -(-w // f)), np.float32)
    den = np.zeros_like(num)
    _block_sums(z, f, np.float32(centre), num, den)
    sig = sigma_px / f
    num = ndimage.gaussian_filter(num, sig, truncate=3.0)
    den = ndimage.gaussian_filter(den, sig, truncate=3.0)
    with np.errstate(all="ignore"):
        return np.where(den > 1e-3, num / den, np.nan).astype(np.float64)


def lowpass_coarse(z: np.ndarray, sigma_m: float, res: float) -> tuple[np.ndarray, int, float]:
    """(low, f, centre): the Gaussian low-pass (sigma ``sigma_m``, NaN-aware) of z - centre on
    a grid coarsened f times by block means (f = a quarter of sigma in pixels). z minus it is
    the terrain detail that locates a DEM horizontally, without the long-wavelength errors
    (jitter, undulations) that do not. At these sigmas the coarse filter is indistinguishable
    from the full-resolution one and two orders of magnitude cheaper; it is never
    interpolated back to the full grid, only at the points a fit samples."""
    f = max(1, int(sigma_m / res / 4))
    sub = z[::16, ::16]
    centre = float(np.nanmedian(sub)) if np.isfinite(sub).any() else 0.0
    return np.nan_to_num(_coarse_gaussian(z, f, sigma_m / res, centre)), f, centre


def _central_gradients(at, rows: np.ndarray, cols: np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray]:
    """(d/dx east, d/dy north) at the points by central differences of ``at(rows, cols, dr, dc)``,
    the surface at (rows + dr, cols + dc)."""
    gx = (at(rows, cols, 0.0, 1.0) - at(rows, cols, 0.0, -1.0)) / (2 * res)
    gy = -(at(rows, cols, 1.0, 0.0) - at(rows, cols, -1.0, 0.0)) / (2 * res)  # +y is -row
    return gx, gy


def smoothed_surface(z: np.ndarray, sigma_m: float, res: float):
    """``at(rows, cols, dr=0, dc=0)``: z smoothed by a NaN-aware Gaussian of ``sigma_m``, at
    full-resolution pixel coordinates (rows + dr, cols + dc). Where sigma spans at least two
    pixels the smoothing runs on the grid of 2 x 2 block means, the smoothing of the block mean
    and of the interpolation taken out of the Gaussian's: the result is band-limited well below
    that grid's Nyquist frequency (the Gaussian's response there is below 1 %), four times
    cheaper than on the full grid, and interpolated bilinearly. Offsets on the deep-stack
    benchmark are unchanged at 17 strips and 5-6 mm (0.3 % of a pixel) worse at 24 and 46."""
    sigma_px = sigma_m / res
    if sigma_px <= 0:
        return lambda r, c, dr=0.0, dc=0.0: bilinear(z, r, c, dr, dc)
    if sigma_px < 2.0:
        zs = nan_gaussian(z, sigma_px, np.float32)
        return lambda r, c, dr=0.0, dc=0.0: bilinear(zs, r, c, dr, dc)
    f = 2
    # variances (px^2) of the f-pixel block mean and, on average, of bilinear interpolation
    # from the f-times coarser grid (a triangle of half-width f): the smoothing they add
    box_var, interp_var = (f * f - 1) / 12.0, f * f / 6.0
    coarse = _coarse_gaussian(z, f, np.sqrt(sigma_px ** 2 - box_var - interp_var), 0.0)
    return lambda r, c, dr=0.0, dc=0.0: bilinear(coarse, r, c, dr, dc, f=f)


def prepare(z: np.ndarray, res: float, cfg: CoregConfig, rng: np.random.Generator) -> PreparedDem:
    """Stable-pixel candidates of one DEM, with its surfaces and gradients there.

    Gradients are those of the DEM smoothed by ``gradient_smoothing_m`` (noisy gradients
    bias a least-squares shift towards zero: errors in variables); the high-passed
    surface's are the smoothed DEM's minus the low-pass's."""
    w = z.shape[1]
    interior = np.zeros(z.shape, bool)
    interior[1:-1, 1:-1] = True
    idx = np.flatnonzero(np.isfinite(z) & interior)
    n_cand = 4 * cfg.sample_size
    # draw extra (with replacement: the rare repeat costs nothing), keep the first n_cand not steep
    idx = idx[rng.integers(0, idx.size, 2 * n_cand)] if idx.size > 2 * n_cand else rng.permutation(idx)
    rows, cols = (a.astype(np.float64) for a in np.divmod(idx, w))
    # in random order: the smoothed surface is sampled on its grid of 2 x 2 block means, which
    # stays in cache (sorting the points into memory order first cost more than it saved)
    gx, gy = _central_gradients(smoothed_surface(z, cfg.gradient_smoothing_m, res), rows, cols, res)
    ok = np.isfinite(gx) & np.isfinite(gy) & (gx * gx + gy * gy <= np.tan(np.radians(cfg.max_slope_deg)) ** 2)
    keep = np.flatnonzero(ok)[:n_cand]  # random order: the first k of them are a random sample
    idx, rows, cols, gx, gy = idx[keep], rows[keep], cols[keep], gx[keep], gy[keep]
    gx, gy = gx.astype(np.float32), gy.astype(np.float32)  # 46 DEMs x 160k candidates: keep it small
    values = {"raw": z.ravel()[idx].astype(np.float32)}
    grads = {"raw": (gx, gy)}
    dem = PreparedDem(z, idx, values, grads)
    if cfg.highpass_sigma_m > 0:
        dem.low, dem.f, dem.centre = lowpass_coarse(z, cfg.highpass_sigma_m, res)
        lx, ly = _central_gradients(dem.low_at, rows, cols, res)
        values["hp"] = (values["raw"] - dem.centre - dem.low_at(rows, cols)).astype(np.float32)
        grads["hp"] = ((gx - lx).astype(np.float32), (gy - ly).astype(np.float32))
    return dem


def sample_stable(ref: PreparedDem, other_valid: np.ndarray, matched: np.ndarray | None, cfg: CoregConfig,
                  exclude: np.ndarray | None = None) -> np.ndarray:
    """Positions (into ``ref.candidates``) of up to ``cfg.sample_size`` random stable pixels
    valid in both DEMs, in the order of the pixels in memory."""
    c = ref.candidates
    keep = other_valid.ravel()[c]
    if matched is not None:
        keep &= matched.ravel()[c]
    if exclude is not None:
        keep &= ~exclude.ravel()[c]
    sel = np.flatnonzero(keep)[: cfg.sample_size]
    return sel[np.argsort(c[sel])]  # evaluated in memory order (a random walk over the grid misses the cache)


ROBUST_SUBSAMPLE = 8192  # the median and NMAD of a clip are estimated on at most this many samples


def _clip(dh: np.ndarray, ok: np.ndarray, nsigma: float) -> np.ndarray:
    """Samples within ``nsigma`` robust sigmas (NMAD) of the median (both estimated on an
    evenly spaced subsample: the samples are already in random order of place)."""
    v = dh[ok]
    if v.size > ROBUST_SUBSAMPLE:
        v = v[:: -(-v.size // ROBUST_SUBSAMPLE)]
    med = np.median(v)
    return ok & (np.abs(dh - med) <= nsigma * max(NMAD_K * float(np.median(np.abs(v - med))), 1e-3))


@numba.njit(cache=True, nogil=True)
def _normal_equations(dh, gx, gy, use):
    """(A^T A, A^T dh) of the shift model dh = c - gx dx - gy dy over the samples ``use``."""
    ata = np.zeros((3, 3))
    atb = np.zeros(3)
    for k in range(dh.size):
        if use[k]:
            a1, a2 = -float(gx[k]), -float(gy[k])
            d = float(dh[k])
            ata[0, 0] += 1.0
            ata[0, 1] += a1
            ata[0, 2] += a2
            ata[1, 1] += a1 * a1
            ata[1, 2] += a1 * a2
            ata[2, 2] += a2 * a2
            atb[0] += d
            atb[1] += a1 * d
            atb[2] += a2 * d
    ata[1, 0], ata[2, 0], ata[2, 1] = ata[0, 1], ata[0, 2], ata[1, 2]
    return ata, atb


@dataclass
class _Horizontal:
    dx: float = 0.0
    dy: float = 0.0
    sigma_h: float = float("inf")  # formal 1-sigma of the shift's magnitude
    sigma_dx: float = float("inf")
    sigma_dy: float = float("inf")
    iterations: int = 0
    reason: str = ""


def _shifted(tba: PreparedDem, kind: str, rows, cols, dx: float, dy: float, res: float) -> np.ndarray:
    """``tba``'s surface ``kind`` at sample pixels p + (dx, dy) (+x is +col, +y is -row)."""
    return tba.at(kind, rows, cols, -dy / res, dx / res)


def _fit_horizontal(ref: PreparedDem, tba: PreparedDem, kind: str, rows, cols, pos, res: float, cfg: CoregConfig,
                    overlap_m2: float, start: tuple[float, float] = (0.0, 0.0)) -> _Horizontal:
    """Iterated least-squares shift on surface ``kind`` ("raw" or "hp") at the samples
    (``pos``: positions in ``ref.candidates``), from the shift ``start`` (m)."""
    out = _Horizontal(dx=float(start[0]), dy=float(start[1]))
    a = ref.values[kind][pos]
    gxs, gys = ref.grads[kind][0][pos], ref.grads[kind][1][pos]
    finite = np.isfinite(gxs) & np.isfinite(gys)
    tilted = np.degrees(np.arctan(np.hypot(gxs, gys))) >= cfg.min_slope_deg
    converged = False
    for it in range(1, cfg.max_iterations + 1):
        dh = _shifted(tba, kind, rows, cols, out.dx, out.dy, res) - a
        ok = np.isfinite(dh) & finite
        if ok.sum() < cfg.min_stable_pixels:
            out.reason = f"only {int(ok.sum())} valid samples after shifting"
            return out
        use = _clip(dh, ok, cfg.outlier_nsigma) & tilted
        if use.sum() < cfg.min_stable_pixels:
            out.reason = "too flat for a horizontal fit"
            return out
        try:  # 3 unknowns: the normal equations
            (_, ddx, ddy) = np.linalg.solve(*_normal_equations(dh, gxs, gys, use))
        except np.linalg.LinAlgError:
            out.reason = "singular horizontal fit"
            return out
        out.dx += float(ddx)
        out.dy += float(ddy)
        out.iterations = it
        if abs(out.dx) > 3 * cfg.max_pair_shift_m or abs(out.dy) > 3 * cfg.max_pair_shift_m:
            out.reason = "horizontal shift diverged"
            return out
        if np.hypot(ddx, ddy) < cfg.convergence_m:
            converged = True
            break
    if not converged:
        out.reason = f"no convergence in {cfg.max_iterations} iterations"
        return out
    # formal errors: s^2 (A^T A)^-1, inflated by n_used / n_independent, the errors being
    # correlated over error_correlation_m (or over the high-pass scale once filtered)
    dh = _shifted(tba, kind, rows, cols, out.dx, out.dy, res) - a
    use = _clip(dh, np.isfinite(dh) & finite, cfg.outlier_nsigma) & tilted
    corr = cfg.error_correlation_m if kind == "raw" else min(cfg.error_correlation_m, cfg.highpass_sigma_m)
    n = int(use.sum())
    n_indep = max(1.0, min(n, overlap_m2 / (np.pi * corr**2)))
    try:
        cov = np.linalg.inv(_normal_equations(dh, gxs, gys, use)[0]) * max(nmad(dh[use]), 1e-3) ** 2 * (n / n_indep)
    except np.linalg.LinAlgError:
        out.reason = "singular horizontal fit"
        return out
    out.sigma_dx, out.sigma_dy = float(np.sqrt(cov[1, 1])), float(np.sqrt(cov[2, 2]))
    out.sigma_h = float(np.hypot(out.sigma_dx, out.sigma_dy))
    return out


def nuth_kaab(
    ref: np.ndarray | PreparedDem, tba: np.ndarray | PreparedDem, res: float, cfg: CoregConfig, *,
    matched: np.ndarray | None = None, exclude: np.ndarray | None = None, rng: np.random.Generator | None = None,
    i: int = 0, j: int = 1,
) -> PairFit:
    """Displacement (dx, dy, dz) of ``tba`` relative to ``ref`` (same grid, NaN = nodata).

    ``matched`` marks trusted pixels (matchtag 1 in both); ``exclude`` marks known
    changing ground. The fit is on a random subsample of stable pixels. DEMs may be
    given as arrays or, to share the work across pairs, already :func:`prepare`-d.

    The horizontal shift is first solved on high-passed DEMs (``cfg.highpass_sigma_m``).
    The shift model is linear and shift-invariant, so filtering both sides keeps it exact
    while removing the spatially correlated errors that otherwise dominate the fit: a
    pre-whitening, as in generalised least squares. Terrain without detail at that scale
    gives the filtered fit little to hold on to; when its formal precision is worse than
    ``highpass_fallback_sigma_m``, the unfiltered fit is also made and the more precise one
    kept. The vertical offset is the robust median of the unfiltered difference.
    """
    rng = rng or np.random.default_rng(0)
    fit = PairFit(i, j)
    ref = ref if isinstance(ref, PreparedDem) else prepare(ref, res, cfg, rng)
    tba = tba if isinstance(tba, PreparedDem) else prepare(tba, res, cfg, rng)
    valid_b = np.isfinite(tba.z)
    pos = sample_stable(ref, valid_b, matched, cfg, exclude)
    if pos.size < cfg.min_stable_pixels:
        fit.reason = f"only {pos.size} stable pixels in the overlap"
        return fit
    rows, cols = np.divmod(ref.candidates[pos], ref.z.shape[1])
    rows, cols = rows.astype(np.float64), cols.astype(np.float64)
    overlap_m2 = np.count_nonzero(np.isfinite(ref.z) & valid_b) * res * res
    h = _Horizontal(reason="no horizontal fit")
    high = "hp" in ref.values and tba.low is not None
    if high:
        h = _fit_horizontal(ref, tba, "hp", rows, cols, pos, res, cfg, overlap_m2)
    if not high or h.sigma_h > cfg.highpass_fallback_sigma_m:
        # from the filtered fit's shift where it has one: the same fixed point, fewer iterations
        raw = _fit_horizontal(ref, tba, "raw", rows, cols, pos, res, cfg, overlap_m2,
                              (h.dx, h.dy) if np.isfinite(h.sigma_h) else (0.0, 0.0))
        if raw.sigma_h < h.sigma_h:
            h = raw
    fit.iterations = h.iterations
    dx, dy = (h.dx, h.dy) if np.isfinite(h.sigma_h) else (0.0, 0.0)
    # vertical: robust median of the unfiltered difference at the final shift
    d = _shifted(tba, "raw", rows, cols, dx, dy, res) - ref.values["raw"][pos]
    keep = _clip(d, np.isfinite(d), cfg.outlier_nsigma)
    fit.dx, fit.dy, fit.dz = dx, dy, float(np.median(d[keep]))
    fit.nmad_m = nmad(d[keep])
    fit.n_used = int(keep.sum())
    n_indep = max(1.0, min(fit.n_used, overlap_m2 / (np.pi * cfg.error_correlation_m**2)))
    fit.sigma_dz = float(1.2533 * max(fit.nmad_m, 1e-3) / np.sqrt(n_indep))
    fit.sigma_dx, fit.sigma_dy = h.sigma_dx, h.sigma_dy
    if not np.isfinite(h.sigma_h):
        fit.reason = f"{h.reason}; vertical offset only"
    if fit.nmad_m > cfg.max_pair_sigma_m:
        fit.reason = f"poor fit (NMAD {fit.nmad_m:.1f} m)"
    elif max(abs(dx), abs(dy)) >= cfg.max_pair_shift_m:
        fit.reason = f"shift {dx:.1f}, {dy:.1f} m beyond the limit"
    else:
        fit.ok = True
    return fit


@dataclass
class DemOffset:
    index: int
    dx: float = 0.0
    dy: float = 0.0
    dz: float = 0.0
    n_pairs: int = 0
    residual_rms_m: float = np.nan  # RMS of this DEM's pair residuals (x, y, z combined)
    median_pair_nmad_m: float = np.nan
    used: bool = True
    reason: str = ""


@dataclass
class BundleResult:
    offsets: list[DemOffset]
    pairs: list[PairFit]
    rejected_pairs: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def used(self) -> np.ndarray:
        return np.array([o.used for o in self.offsets])


def _solve(n: int, pairs: list[PairFit], comp: str, prior_sigma: float) -> np.ndarray:
    """Weighted least squares for per-DEM displacements of one component."""
    rows, rhs, w = [], [], []
    for p in pairs:
        r = np.zeros(n)
        r[p.j] = 1.0
        r[p.i] = -1.0
        rows.append(r)
        rhs.append(getattr(p, comp))
        # weight: the pair's formal precision, floored (no pair is better than 2 cm)
        sigma = max(getattr(p, "sigma_" + comp), 0.02)
        w.append(1.0 / sigma**2)
    # weak prior on every DEM and a strong zero-mean constraint
    for k in range(n):
        r = np.zeros(n)
        r[k] = 1.0
        rows.append(r)
        rhs.append(0.0)
        w.append(1.0 / prior_sigma**2)
    rows.append(np.ones(n) / n)
    rhs.append(0.0)
    w.append(1e6)
    A = np.asarray(rows) * np.sqrt(np.asarray(w))[:, None]
    b = np.asarray(rhs) * np.sqrt(np.asarray(w))
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    return sol


def bundle_adjust(n: int, pairs: list[PairFit], cfg: CoregConfig) -> BundleResult:
    """Per-DEM displacements (relative to the mean of the used DEMs) from pairwise fits."""
    offsets = [DemOffset(k) for k in range(n)]
    rejected: list[tuple[int, int, str]] = [(p.i, p.j, p.reason) for p in pairs if not p.ok]
    good = [p for p in pairs if p.ok]
    # DEM screening: a DEM whose pairs are all poor is a blunder (clouds, bad stereo)
    for o in offsets:
        fitted = [p.nmad_m for p in pairs if o.index in (p.i, p.j) and np.isfinite(p.nmad_m)]
        o.median_pair_nmad_m = float(np.median(fitted)) if fitted else np.nan
        if fitted and o.median_pair_nmad_m > cfg.max_dem_nmad_m:
            o.used, o.reason = False, f"poor fits with every other DEM (median NMAD {o.median_pair_nmad_m:.2f} m)"
        elif not any(o.index in (p.i, p.j) for p in good):
            o.used, o.reason = False, "no usable pair (no overlap or every fit failed)"
    good = [p for p in good if offsets[p.i].used and offsets[p.j].used]
    used_idx = [o.index for o in offsets if o.used]
    if not used_idx:
        return BundleResult(offsets, pairs, rejected)
    pos = {k: m for m, k in enumerate(used_idx)}

    def remap(p: PairFit) -> PairFit:
        return dataclasses.replace(p, i=pos[p.i], j=pos[p.j])

    while True:
        sub = [remap(p) for p in good]
        sol = {c: _solve(len(used_idx), sub, c, cfg.prior_sigma_m) for c in ("dx", "dy", "dz")}
        res = np.array([[getattr(p, c) - (sol[c][q.j] - sol[c][q.i]) for c in ("dx", "dy", "dz")]
                        for p, q in zip(good, sub)])
        if len(good) < 3:
            break
        mag = np.hypot(np.hypot(res[:, 0], res[:, 1]), res[:, 2])
        # normalised by each pair's own precision (floored), so one blunder cannot hide in
        # a residual scale it inflates itself
        sig = np.array([np.sqrt(p.sigma_dx**2 + p.sigma_dy**2 + p.sigma_dz**2) for p in good])
        norm = mag / np.maximum(sig, cfg.min_residual_reject_m / cfg.residual_reject_nsigma)
        degree = np.bincount([k for p in good for k in (p.i, p.j)], minlength=n)
        removable = np.array([degree[p.i] > 2 and degree[p.j] > 2 for p in good])
        norm = np.where(removable, norm, 0.0)
        worst = int(np.argmax(norm))
        if norm[worst] <= cfg.residual_reject_nsigma:
            break
        p = good.pop(worst)
        rejected.append((p.i, p.j, f"inconsistent with the other pairs (residual {mag[worst]:.2f} m)"))
    for k, o in zip(used_idx, (offsets[k] for k in used_idx)):
        m = pos[k]
        o.dx, o.dy, o.dz = (float(sol[c][m]) for c in ("dx", "dy", "dz"))
    for o in offsets:
        mine = [r for p, r in zip(good, res) if o.index in (p.i, p.j)]
        o.n_pairs = len(mine)
        if mine:
            o.residual_rms_m = float(np.sqrt(np.mean(np.sum(np.square(mine), axis=1))))
        elif o.used:
            o.used, o.reason = False, "every pair rejected by the adjustment"
    return BundleResult(offsets, pairs, rejected)


def overlap_fraction(a_valid: np.ndarray, b_valid: np.ndarray) -> float:
    both = np.count_nonzero(a_valid & b_valid)
    smaller = min(np.count_nonzero(a_valid), np.count_nonzero(b_valid))
    return both / smaller if smaller else 0.0


def coregister_stack(
    z: np.ndarray, matched: np.ndarray, res: float, cfg: CoregConfig, *, seed: int = 0, exclude: np.ndarray | None = None,
) -> BundleResult:
    """Pairwise Nuth & Kääb over every overlapping pair of the stack ``z`` (n, H, W), then
    the bundle adjustment. ``matched`` (n, H, W) marks matchtag-1 pixels.

    With ``cfg.second_pass`` the ground found changing after the first adjustment (see
    :func:`changing_ground`) is excluded and everything is solved again: debris lobes and
    scars on valley sides otherwise bias the horizontal offsets, since steep ground carries
    most of their information.
    """
    first = _coregister_once(z, matched, res, cfg, seed=seed, exclude=exclude)
    if not cfg.second_pass:
        return first
    moving = changing_ground(z, first, res, cfg.changing_threshold_m, int(round(cfg.changing_dilate_m / res)))
    if exclude is not None:
        moving |= exclude
    return _coregister_once(z, matched, res, cfg, seed=seed, exclude=moving)


def pair_graph(overlapping: np.ndarray, neighbours: int, long_baseline: int) -> list[tuple[int, int]]:
    """The pairs to coregister among ``n`` DEMs in time order, given which overlap
    (``overlapping``: (n, n) bool, symmetric).

    ``neighbours`` = 0: every overlapping pair (n(n-1)/2). Otherwise each DEM is paired with
    its ``neighbours`` nearest overlapping DEMs in time order (little real change between
    them, so the most stable ground) and with ``long_baseline`` partners spread over the
    record (so that errors cannot accumulate along a chain of short pairs); where that
    leaves the graph in pieces, the closest overlapping pair joining two pieces is added.
    O(k n) pairs instead of O(n^2), each DEM in several pairs, so that the bundle
    adjustment can still tell a blunder from its partners."""
    n = overlapping.shape[0]
    if neighbours <= 0:
        return [(i, j) for i in range(n) for j in range(i + 1, n) if overlapping[i, j]]
    chosen: set[tuple[int, int]] = set()
    for i in range(n):
        others = [j for j in sorted(range(n), key=lambda j: (abs(j - i), j)) if j != i and overlapping[i, j]]
        for j in others[:neighbours]:
            chosen.add((min(i, j), max(i, j)))
        for m in range(1, long_baseline + 1):
            target = (i + m * n // (long_baseline + 1)) % n
            far = [j for j in sorted(range(n), key=lambda j: (abs(j - target), j)) if j != i and overlapping[i, j]]
            if far:
                chosen.add((min(i, far[0]), max(i, far[0])))
    # join the pieces (union-find over the chosen pairs)
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in chosen:
        parent[root(i)] = root(j)
    every = [(a, b) for a in range(n) for b in range(a + 1, n) if overlapping[a, b]]
    for i, j in sorted(every, key=lambda p: (p[1] - p[0], p)):
        if root(i) != root(j):
            chosen.add((i, j))
            parent[root(i)] = root(j)
    return sorted(chosen)


def _coregister_once(
    z: np.ndarray, matched: np.ndarray, res: float, cfg: CoregConfig, *, seed: int = 0, exclude: np.ndarray | None = None,
) -> BundleResult:
    n = z.shape[0]
    rng = np.random.default_rng(seed)
    overlapping = np.zeros((n, n), bool)
    coarse = np.isfinite(z[:, ::8, ::8])  # overlap fractions to a per cent need no more than every 8th pixel
    for i in range(n):
        for j in range(i + 1, n):
            overlapping[i, j] = overlapping[j, i] = overlap_fraction(coarse[i], coarse[j]) >= cfg.min_overlap_fraction
    dems = [prepare(z[k], res, cfg, rng) for k in range(n)]
    pairs = [nuth_kaab(dems[i], dems[j], res, cfg, matched=matched[i] & matched[j], exclude=exclude, rng=rng, i=i, j=j)
             for i, j in pair_graph(overlapping, cfg.pair_neighbours, cfg.pair_long_baseline)]
    return bundle_adjust(n, pairs, cfg)


def changing_ground(z: np.ndarray, bundle: BundleResult, res: float, threshold_m: float, dilate_px: int) -> np.ndarray:
    """Pixels whose corrected elevation changes through the record (|median before k -
    median after k| > ``threshold_m`` for k at a third, half and two thirds of the series),
    dilated: slumps, debris, drained lakes and subsidence, excluded from a second pass."""
    used = [o for o in bundle.offsets if o.used]
    if len(used) < 4:
        return np.zeros(z.shape[1:], bool)
    corr = np.stack([apply_offsets(z[o.index], o.dx, o.dy, o.dz, res) for o in used])
    n = len(used)
    changing = np.zeros(z.shape[1:], bool)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: never "changing"
        for k in sorted({n // 3, n // 2, (2 * n) // 3} - {0, n}):
            d = np.abs(np.nanmedian(corr[k:], axis=0) - np.nanmedian(corr[:k], axis=0))
            changing |= d > threshold_m
    return ndimage.binary_dilation(changing, iterations=dilate_px) if dilate_px else changing


def apply_offsets(z: np.ndarray, dx: float, dy: float, dz: float, res: float) -> np.ndarray:
    """The corrected DEM: B(p + (dx, dy)) - dz, bilinear, NaN outside or next to nodata."""
    out = _shift_grid(z, -dy / res, dx / res, np.empty(z.shape, np.float32))
    out -= np.float32(dz)
    return out


def shift_mask(mask: np.ndarray, dx: float, dy: float, res: float) -> np.ndarray:
    """A boolean mask moved with its DEM (nearest neighbour)."""
    return ndimage.shift(mask.astype(np.uint8), (dy / res, -dx / res), order=0, mode="constant", cval=0) > 0

"""Per-pixel dominant elevation step of a coregistered DEM time series.

Model (Dai et al. 2025, after the DEMChangeDetection code): each pixel's series is a
constant with one step, z(t) = a + dh * H(t - t_c). The reference code takes the largest
first difference as the event and refines its magnitude by a least-squares Heaviside fit.
Here the step position itself is the least-squares optimum: for every admissible split
of the sorted series the two-level fit's weighted residual sum of squares is computed
from cumulative sums (O(n) per pixel), and the minimum wins: the maximum-likelihood
single step, not fooled by one noisy difference the way the largest jump is.

What is not ground is removed *before* the fit, wherever it sits in the series:

0. **Snow, per pixel.** In the first ``snow_shoulder_days`` of the snow-free window,
   late-lying banks can still lie in the lee of slopes: an acquisition of those days that
   sits above the snow-free ground around it in time (the lower of the means of the nearest
   two later-season acquisitions on each side) by more than ``snow_shoulder_min_m`` is snow
   at that pixel (low weight, no support); so is, harmlessly, ground that dropped later the
   same summer (the step is then dated from the acquisition before). Snow only ever raises
   the surface. A matched acquisition from
   outside the snow-free window (:mod:`pipeline.dem.snow`) that lies no more than
   ``snow_rise_tolerance_m`` above the lowest of the nearest two snow-free acquisitions on
   either side of it is ground at that pixel, weighted and counted as support like
   any matched observation: an early-July strip at 80 deg N still shows a scar that
   deepened since the summer before, while its snow banks stay distrusted. (Snow thinner
   than the drop it lies in cannot be told from ground: such a drop is underestimated by
   the snow's depth.)
1. **Consensus.** An observation that disagrees with the median of its nearest
   ``consensus_neighbours`` observations on both sides (by more than
   max(``consensus_min_m``, ``consensus_nsigma`` x its combined sigma)) is rejected (a
   trusted observation is judged against trusted neighbours only):
   unflagged clouds high *or* low, matching failures, a spring drift. Trusted
   neighbours (matched, inside the snow-free window of :mod:`pipeline.dem.snow`) are
   preferred, so an early-summer acquisition carrying late snow is judged against the
   late-summer acquisitions of the same and adjacent years; two cloudy acquisitions of
   one summer are outvoted by the third neighbour. A real step passes: each observation
   agrees with its own side.
2. **Weights.** Matched observations have sigma ``sigma_matched_m``; interpolated
   (matchtag 0) ones are kept at ``sigma_interpolated_m`` (the reference code dilates and
   drops them); acquisitions outside the snow-free window, where step 0 did not clear
   them, at no better than ``sigma_snow_season_m``.
3. **Fit and residual outliers**: the optimal split, then twice residual outliers
   beyond ``outlier_nsigma`` robust sigmas rejected and the step refitted.
4. **Support.** At the ends of a series only one side exists, so a blunder in the first
   or last acquisition looks exactly like a step. The support of each side is recorded
   (``n_before``, ``n_after``): the number of trusted *epochs* (trusted observations more
   than ``support_epoch_days`` apart: strips of one day can share a cloud, strips weeks
   apart cannot share an artefact at one place); a step with fewer than
   ``min_support_obs`` on a side is never confident, whatever its size. Such unsupported
   steps (|dh| >= ``unsupported_min_dh_m``) are kept only where they continue supported
   change of the same sign (the first and last seasons of a retreating headwall, next to
   the bands it cut in the seasons between) and are not much larger than it; elsewhere
   the pixel is refitted without the observations of its short side.
5. **First witness.** A headwall that retreated between the first acquisition and the
   second leaves a band seen higher by that one acquisition alone; out of season, or
   alone on its side, the fit leaves it out (inadmissible, or a residual outlier) or keeps it
   at low weight without a step. Where it lies at least ``first_witness_min_dh_m`` above the
   surface that followed it, the pixel shows no change of its own, and it joins supported
   drops within the same magnitude limit, it is restored as the level before a drop
   (:func:`first_witness_drops`; never confident). A cloud of that height in the first strip
   that touches a scar and is no taller than the limit cannot be told from such a band.
6. **Ground drops only while it thaws.** Two acquisitions that bound no day of the latitude's
   snow-free window (:func:`pipeline.dem.snow.snow_free_days_between`; a late-May strip and a
   mid-June one at 67 N) cannot bound a fall of the ground: the higher one saw snow or a
   cloud. A first-witness band needs at least ``first_witness_min_thaw_days`` of thaw between
   the witness and the pixel's next observation at the later level, and a step with no trusted
   epoch before it is refitted on the observations after it where every acquisition that saw the
   pixel above the later level is followed by one at that level with no thaw between
   (:func:`spring_only_drops`; a scar seen high in autumn and filled by a drift the next spring
   keeps its drop).

Admissibility: each side of a step needs two observations, or one trusted observation.

Nested scars and deepening floors: a headwall can pass a pixel twice, and a scar floor can
drop over several seasons, so where the dominant step is a drop of at least
``secondary_step_m``, the observations before and after it are searched for one further
step each, and a further drop (>= ``secondary_step_m`` and 3 sigma) is added. The residual
outlier test of step 3 judges the observations against this piecewise fit, so the
intermediate levels of a deepening pixel are not rejected as outliers of a single step. dh is
then the change from the first to the last level, the loss a volume must count; t1/t2 stay
those of the dominant step.

Outputs per pixel: ``dh`` (m, negative = ground dropped), ``dh_sigma`` (m, posterior sigma
of the step: the a-posteriori variance factor, floored at 1, times 1/W_before + 1/W_after),
``t1``/``t2`` (days since 2000-01-01 of the last observation before and the first after the
step; an observation rejected between them that is already past halfway to the new level
moves t2 earlier: a headwall caught mid-pixel), ``n_obs`` (observations used),
``n_before``/``n_after`` (trusted epochs supporting each side) and ``confidence``
(1 when |dh| >= 3 sigma with >= 4 DEMs, sigma < 2 m, >= ``min_support_obs`` on each side
and a 3x3 spread of event time < 1 year).

The per-pixel kernel is compiled with numba (one pass over the stack, no temporary
(n, H, W) arrays); it releases the GIL.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numba
import numpy as np
from scipy import ndimage

from data_products import schema

from pipeline.config import ChangeConfig
from pipeline.dem.snow import shoulder_acquisitions, snow_free_days_between, trusted_acquisitions

NODATA_DATE = schema.NODATA_DATE  # days since DATE_EPOCH: no step


@dataclass
class ChangeResult:
    dh: np.ndarray  # float32 (H, W), NaN undefined
    dh_sigma: np.ndarray  # float32
    t1: np.ndarray  # int32 days since 2000-01-01, NODATA_DATE undefined
    t2: np.ndarray  # int32
    n_obs: np.ndarray  # int16
    confidence: np.ndarray  # uint8: 1 confident, 0 not, 255 undefined
    n_before: np.ndarray | None = None  # int16 trusted epochs before the step (-1 undefined)
    n_after: np.ndarray | None = None  # int16 trusted epochs after it


# ----------------------------------------------------------------------------- numba kernel


@numba.njit(cache=True, nogil=True)
def _select(a, lo, hi, k):
    """The k-th smallest of a[lo:hi] (quickselect in place, median-of-three pivot)."""
    while hi - lo > 1:
        mid = (lo + hi - 1) // 2
        x, y, z = a[lo], a[mid], a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        i, j = lo, hi - 1
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[lo]


@numba.njit(cache=True, nogil=True)
def _median(a, n):
    """Median of a[:n], reordering a[:n] in place: no allocation (which would dominate the
    kernel's cost at one call per observation and pixel) and O(n) for deep stacks."""
    if n <= 8:  # insertion sort: the consensus test's medians of three
        for i in range(1, n):
            v = a[i]
            j = i - 1
            while j >= 0 and a[j] > v:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = v
        if n % 2 == 1:
            return a[n // 2]
        return 0.5 * (a[n // 2 - 1] + a[n // 2])
    hi = _select(a, 0, n, n // 2)
    if n % 2 == 1:
        return hi
    lo = a[0]  # the largest of the lower half, which quickselect left below position n // 2
    for i in range(1, n // 2):
        if a[i] > lo:
            lo = a[i]
    return 0.5 * (lo + hi)


@numba.njit(cache=True, nogil=True, inline="always")
def _nearest_on_side(y, flag, m, j, direction, k):
    """(count, sum, minimum) of the nearest ``k`` flagged observations on one side of j
    (direction -1: before, +1: after); the minimum is inf when there is none."""
    cnt = 0
    acc = 0.0
    low = np.inf
    i = j + direction
    while 0 <= i < m and cnt < k:
        if flag[i]:
            cnt += 1
            acc += y[i]
            low = min(low, y[i])
        i += direction
    return cnt, acc, low


@numba.njit(cache=True, nogil=True)
def _side_median(y, tr, m, j, direction, k, buf):
    """Median of the nearest ``k`` observations on one side of j, and their count. A trusted
    observation is judged against trusted ones only (none: the side is absent); an untrusted
    one against trusted ones where at least two exist on that side, else against all."""
    cnt = 0
    i = j + direction
    while 0 <= i < m and cnt < k:
        if tr[i]:
            buf[cnt] = y[i]
            cnt += 1
        i += direction
    if cnt < 2 and not (tr[j] and cnt == 1):
        if tr[j]:
            return 0.0, 0
        cnt = 0
        i = j + direction
        while 0 <= i < m and cnt < k:
            buf[cnt] = y[i]
            cnt += 1
            i += direction
    if cnt == 0:
        return 0.0, 0
    return _median(buf, cnt), cnt


@numba.njit(cache=True, nogil=True)
def _fit_step(y, w, tr, a, b):
    """Best single step of y[a:b] with weights w (0 = unused). Returns
    (k, mean_before, mean_after, ssr, W_before, W_after, n_used); k = index of the first
    observation after the step, -1 where no admissible split exists."""
    Wt = 0.0
    St = 0.0
    Qt = 0.0
    Nt = 0
    Rt = 0
    for i in range(a, b):
        if w[i] > 0:
            Wt += w[i]
            St += w[i] * y[i]
            Qt += w[i] * y[i] * y[i]
            Nt += 1
            if tr[i]:
                Rt += 1
    best_k = -1
    best_ssr = np.inf
    bmb = 0.0
    bma = 0.0
    bwb = 0.0
    bwa = 0.0
    Wb = 0.0
    Sb = 0.0
    Qb = 0.0
    Nb = 0
    Rb = 0
    for k in range(a, b):
        if k > a and w[k] > 0 and Nb >= 1:
            Na = Nt - Nb
            Ra = Rt - Rb
            if Na >= 1 and (Nb >= 2 or Rb >= 1) and (Na >= 2 or Ra >= 1):
                Wa = Wt - Wb
                Sa = St - Sb
                Qa = Qt - Qb
                ssr = (Qb - Sb * Sb / Wb) + (Qa - Sa * Sa / Wa)
                if ssr < best_ssr:
                    best_ssr = ssr
                    best_k = k
                    bmb = Sb / Wb
                    bma = Sa / Wa
                    bwb = Wb
                    bwa = Wa
        if w[k] > 0:
            Wb += w[k]
            Sb += w[k] * y[k]
            Qb += w[k] * y[k] * y[k]
            Nb += 1
            if tr[k]:
                Rb += 1
    return best_k, bmb, bma, best_ssr, bwb, bwa, Nt


@numba.njit(cache=True, nogil=True)
def _fit_levels(y, w, tr, m, sec_step, lev):
    """The dominant step of y[:m] and, where it is a drop of at least ``sec_step``, one
    further drop on each side of it (>= ``sec_step`` and 3 sigma): a headwall passing a
    pixel twice, a scar floor deepening over several seasons. Writes each observation's
    fitted level into ``lev[:m]``. Returns (k, mean_before, mean_after, first level, its
    weight, last level, its weight, weighted SSR of the piecewise fit, number of levels,
    n_used); k = -1 where no admissible split exists."""
    k, mb, ma, ssr, wb, wa, nt = _fit_step(y, w, tr, 0, m)
    if k < 0:
        return k, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, nt
    first, wf, last, wl = mb, wb, ma, wa
    kb = -1
    ka = -1
    mid_b = mb
    mid_a = ma
    if sec_step > 0 and ma - mb <= -sec_step:
        vf = ssr / (nt - 2) if nt > 2 else 1.0
        if vf < 1.0:
            vf = 1.0
        k2, b1, b2, _, w1, w2, _ = _fit_step(y, w, tr, 0, k)
        if k2 >= 0 and b2 - b1 <= -sec_step and -(b2 - b1) >= 3.0 * np.sqrt(vf * (1.0 / w1 + 1.0 / w2)):
            kb, first, wf, mid_b = k2, b1, w1, b2
        k2, a1, a2, _, w1, w2, _ = _fit_step(y, w, tr, k, m)
        if k2 >= 0 and a2 - a1 <= -sec_step and -(a2 - a1) >= 3.0 * np.sqrt(vf * (1.0 / w1 + 1.0 / w2)):
            ka, last, wl, mid_a = k2, a2, w2, a1
    ssr = 0.0
    for j in range(m):
        if j < k:
            f = first if (kb >= 0 and j < kb) else mid_b
        else:
            f = last if (ka >= 0 and j >= ka) else mid_a
        lev[j] = f
        if w[j] > 0:
            ssr += w[j] * (y[j] - f) * (y[j] - f)
    nseg = 2 + (1 if kb >= 0 else 0) + (1 if ka >= 0 else 0)
    return k, mb, ma, first, wf, last, wl, ssr, nseg, nt


@numba.njit(cache=True, nogil=True)
def _fit_pixels(z, matched, trusted_acq, shoulder_acq, dates, lo, hi, s_m, s_i, s_snow, snow_tol, shoulder_min,
                min_dems, cons_k, cons_min, cons_nsig, out_nsig, out_iter, sec_step, epoch_days,
                o_dh, o_sig, o_t1, o_t2, o_nused, o_nb, o_na, o_k, o_first):
    n, P = z.shape
    y = np.empty(n)
    w = np.empty(n)
    sg = np.empty(n)
    tr = np.zeros(n, np.bool_)
    tr0 = np.zeros(n, np.bool_)
    sm = np.zeros(n, np.bool_)
    sh = np.zeros(n, np.bool_)
    oi = np.empty(n, np.int64)
    buf = np.empty(max(cons_k, n))
    scratch = np.empty(max(n, 1))
    rej = np.zeros(n, np.bool_)
    lev = np.empty(n)
    for p in range(P):
        m = 0
        for i in range(lo[p], hi[p]):
            v = z[i, p]
            if np.isfinite(v):
                y[m] = v
                oi[m] = i
                mt = matched[i, p]
                s = s_m if mt else s_i
                if not trusted_acq[i] and s < s_snow:
                    s = s_snow
                sg[m] = s
                tr[m] = mt and trusted_acq[i]
                sm[m] = mt and not trusted_acq[i]
                sh[m] = shoulder_acq[i]
                m += 1
        o_nused[p] = m
        o_k[p] = -1
        o_first[p] = -1
        if m < min_dems or m < 2:
            continue
        # 0a. late-lying snow in the window's first weeks: a trusted observation from the
        # shoulder that sits above the snow-free ground around it in time (the lower of the
        # means of the nearest two trusted, later-season observations on each side) by more
        # than shoulder_min is snow there: low weight, no support
        for j in range(m):
            tr0[j] = tr[j] and not sh[j]
        for j in range(m):
            if tr[j] and sh[j]:
                nb_, sb, _ = _nearest_on_side(y, tr0, m, j, -1, 2)
                na_, sa, _ = _nearest_on_side(y, tr0, m, j, 1, 2)
                if nb_ and na_ and y[j] > min(sb / nb_, sa / na_) + shoulder_min:
                    tr[j] = False
                    if sg[j] < s_snow:
                        sg[j] = s_snow
        # 0b. snow can only raise the surface: a matched observation from outside the
        # snow-free window that lies no higher than the lowest of the nearest two snow-free
        # observations on either side of it is ground at this pixel, trusted and weighted
        # as such
        for j in range(m):
            tr0[j] = tr[j]
        for j in range(m):
            if sm[j]:
                ref = min(_nearest_on_side(y, tr0, m, j, -1, 2)[2], _nearest_on_side(y, tr0, m, j, 1, 2)[2])
                if y[j] <= ref + snow_tol:
                    tr[j] = True
                    sg[j] = s_m
        for j in range(m):
            scratch[j] = y[j]
        med = _median(scratch, m)
        for j in range(m):
            y[j] -= med
        # 1. consensus: disagreeing with both sides = not ground
        for j in range(m):
            L, nl = _side_median(y, tr, m, j, -1, cons_k, buf)
            R, nr = _side_median(y, tr, m, j, 1, cons_k, buf)
            tau = max(cons_min, cons_nsig * np.sqrt(sg[j] * sg[j] + s_m * s_m))
            rej[j] = nl > 0 and nr > 0 and abs(y[j] - L) > tau and abs(y[j] - R) > tau
        for j in range(m):
            w[j] = 0.0 if rej[j] else 1.0 / (sg[j] * sg[j])
        # 2-3. fit (the dominant step, and nested drops), then residual outliers against it
        k, mb, ma, first, wf, last, wl, ssr, nseg, nt = _fit_levels(y, w, tr, m, sec_step, lev)
        for _ in range(out_iter):
            if k < 0:
                break
            cnt = 0
            rmax = 0.0
            for j in range(m):
                if w[j] > 0:
                    buf[cnt] = abs((y[j] - lev[j]) * np.sqrt(w[j]))
                    rmax = max(rmax, buf[cnt])
                    cnt += 1
            if rmax <= out_nsig:  # the scale is at least 1: nothing can be rejected
                break
            scale = max(1.0, 1.4826 * _median(buf, cnt))
            changed = False
            for j in range(m):
                if w[j] > 0 and abs((y[j] - lev[j]) * np.sqrt(w[j])) > out_nsig * scale:
                    w[j] = 0.0
                    changed = True
            if not changed:
                break
            k, mb, ma, first, wf, last, wl, ssr, nseg, nt = _fit_levels(y, w, tr, m, sec_step, lev)
        if k < 0:
            continue
        vf = ssr / (nt - nseg) if nt > nseg else 1.0
        if vf < 1.0:
            vf = 1.0
        step = ma - mb
        o_dh[p] = last - first
        o_sig[p] = np.sqrt(vf * (1.0 / wf + 1.0 / wl))
        # t1/t2, and support on each side
        lb = -1
        nb = 0
        na = 0
        nu = 0
        last_b = -(1 << 40)
        last_a = -(1 << 40)
        for j in range(m):
            if w[j] > 0:
                nu += 1
                dj = dates[oi[j]]
                if j < k:
                    lb = j
                    if tr[j] and dj - last_b > epoch_days:
                        nb += 1
                        last_b = dj
                elif tr[j] and dj - last_a > epoch_days:
                    na += 1
                    last_a = dj
        kk = k
        # an observation rejected between the two sides, lying between the two levels:
        # part of the drop seen (a headwall caught mid-pixel)
        half = mb + 0.5 * step
        lo_lev = min(mb, ma) - cons_min
        hi_lev = max(mb, ma) + cons_min
        sgn = 1.0 if step > 0 else -1.0
        first_past = -1
        for j in range(lb + 1, k):
            if w[j] == 0 and lo_lev <= y[j] <= hi_lev and (y[j] - half) * sgn > 0:
                first_past = j
                break
        if first_past >= 0:
            kk = first_past
        for j in range(lb + 1, kk):
            if w[j] == 0 and lo_lev <= y[j] <= hi_lev:
                lb = j
        o_t1[p] = dates[oi[lb]] if lb >= 0 else dates[oi[0]]
        o_t2[p] = dates[oi[kk]]
        o_nused[p] = nu
        o_nb[p] = nb
        o_na[p] = na
        o_k[p] = oi[k]
        for j in range(m):
            if w[j] > 0:
                o_first[p] = oi[j]  # the earliest observation the fit used
                break


def _run_kernel(zf, mf, trusted, shoulder, dates, lo, hi, cfg: ChangeConfig):
    P = zf.shape[1]
    out = {
        "dh": np.full(P, np.nan, np.float32), "sig": np.full(P, np.nan, np.float32),
        "t1": np.full(P, NODATA_DATE, np.int32), "t2": np.full(P, NODATA_DATE, np.int32),
        "nused": np.zeros(P, np.int16), "nb": np.full(P, -1, np.int16), "na": np.full(P, -1, np.int16),
        "k": np.full(P, -1, np.int64), "first": np.full(P, -1, np.int64),
    }
    _fit_pixels(zf, mf, trusted, shoulder, dates.astype(np.int64), lo, hi, cfg.sigma_matched_m,
                cfg.sigma_interpolated_m, cfg.sigma_snow_season_m, cfg.snow_rise_tolerance_m, cfg.snow_shoulder_min_m,
                cfg.min_dems, cfg.consensus_neighbours,
                cfg.consensus_min_m, cfg.consensus_nsigma, cfg.outlier_nsigma, cfg.outlier_iterations, cfg.secondary_step_m,
                cfg.support_epoch_days,
                out["dh"], out["sig"], out["t1"], out["t2"], out["nused"], out["nb"], out["na"], out["k"],
                out["first"])
    return out


def continues_supported(u: np.ndarray, magnitude: np.ndarray, supported: np.ndarray, supported_magnitude: np.ndarray,
                        cfg: ChangeConfig, connect: np.ndarray | None = None) -> np.ndarray:
    """The pixels of ``u`` (H, W) that join ``supported`` pixels (8-connected, through ``u``,
    ``supported`` and ``connect``) with a ``magnitude`` (m) at most
    ``unsupported_magnitude_factor`` x the largest ``supported_magnitude`` of that connected
    area + ``unsupported_margin_m``: a retreating headwall's newest band can be wider than any
    fixed window, an artefact blob is much deeper than the scar."""
    area = u | supported if connect is None else u | supported | connect
    lab, n = ndimage.label(area, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(u.shape, bool)
    # the largest supported magnitude of each connected area (0 where none is positive, NaN
    # where one is NaN: either way the area joins nothing, below)
    comp_max = np.zeros(n + 1)
    on = supported & (lab > 0)
    np.maximum.at(comp_max, lab[on], supported_magnitude[on])
    return u & (comp_max[lab] > 0) & (magnitude <= cfg.unsupported_magnitude_factor * comp_max[lab]
                                      + cfg.unsupported_margin_m)


def could_have_fallen(col: np.ndarray, dates: np.ndarray, high: np.ndarray, lower_m: np.ndarray, lat_deg: float,
                      cfg: ChangeConfig) -> np.ndarray:
    """True (C,) where some acquisition marked ``high`` (n, C) is followed, with at least
    ``first_witness_min_thaw_days`` of thaw between (:func:`pipeline.dem.snow.snow_free_days_between`
    at ``lat_deg``), by the pixel's first later observation at or below ``lower_m`` (C,): the
    ground had a thaw to fall from the one level to the other in. ``col`` (n, C) heights in m,
    ``dates`` (n,) days since 2000-01-01."""
    n, C = col.shape
    rows = np.arange(n)[:, None]
    low_row = np.where(np.isfinite(col) & (col <= lower_m[None, :]), rows, n)
    # the first low row strictly after each row: a running minimum from the end, shifted by one
    next_low = np.vstack([np.minimum.accumulate(low_row[::-1], axis=0)[::-1][1:], np.full((1, C), n)])
    hi_row, hi_col = np.nonzero(high & (next_low < n))
    thaw = snow_free_days_between(dates[hi_row], dates[next_low[hi_row, hi_col]], lat_deg, cfg)
    fell = np.zeros(C, bool)
    fell[hi_col[thaw >= cfg.first_witness_min_thaw_days]] = True
    return fell


def spring_only_drops(zf: np.ndarray, dates: np.ndarray, out: dict, lat_deg: float, cfg: ChangeConfig) -> np.ndarray:
    """True (P,) for drops that no thaw can have made: steps of ``out`` (the kernel's per-pixel
    fit: ``dh`` m, ``nb`` trusted epochs before the step, ``k`` the first row after it) with no
    trusted epoch before them, where every acquisition that saw the pixel above the later level
    is followed by one at the later level with no day of the snow-free window at ``lat_deg``
    (degrees N) between them. A late-May strip 3 m above a mid-June one saw snow or a cloud, not
    ground that fell (the ground drops only while it thaws); a scar seen high the autumn before,
    and filled by a snow drift the next spring, still dropped in the summer between.

    ``zf`` (n, P) heights in m, ``dates`` (n,) days since 2000-01-01. "Above" is higher than the
    median of the observations after the step by half the step or ``unsupported_min_dh_m``,
    whichever is more; "at the later level" is not above. :func:`detect_steps` refits the flagged
    pixels on the observations after the step."""
    d = out["dh"]
    flag = np.zeros(d.shape, bool)
    if cfg.first_witness_min_thaw_days <= 0:
        return flag
    ci = np.flatnonzero(np.isfinite(d) & (d <= -cfg.unsupported_min_dh_m) & (out["nb"] == 0) & (out["k"] > 0))
    if ci.size == 0:
        return flag
    col = zf[:, ci]  # (n, C)
    is_after = np.arange(zf.shape[0])[:, None] >= out["k"][ci][None, :]
    has_after = (np.isfinite(col) & is_after).any(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns with nothing after: dropped below
        level_after = np.nanmedian(np.where(is_after, col, np.nan), axis=0)
    upper = level_after + np.maximum(0.5 * np.abs(d[ci]), cfg.unsupported_min_dh_m)
    high = np.isfinite(col) & ~is_after & (col > upper[None, :])
    flag[ci] = has_after & high.any(axis=0) & ~could_have_fallen(col, dates, high, upper, lat_deg, cfg)
    return flag


def unsupported_to_refit(dh, sig, nb, na, cfg: ChangeConfig) -> np.ndarray:
    """Pixels (H, W) whose step rests on fewer than ``min_support_obs`` trusted epochs
    on a side and does not continue supported change of the same sign (connected to it,
    and at most ``unsupported_magnitude_factor`` x the largest supported |dh| of that
    connected area + ``unsupported_margin_m``): artefacts of the first or last
    acquisitions, to be refitted without them."""
    defined = np.isfinite(dh)
    d = np.nan_to_num(dh, nan=0.0)
    s = np.nan_to_num(sig, nan=np.inf)
    short = defined & (np.minimum(nb, na) < cfg.min_support_obs) & (np.abs(d) >= cfg.unsupported_min_dh_m)
    if not short.any():
        return short
    supported = (defined & (np.minimum(nb, na) >= cfg.min_support_obs) & (np.abs(d) >= cfg.unsupported_min_dh_m)
                 & (np.abs(d) >= cfg.confidence_nsigma * s))
    refit = np.zeros(dh.shape, bool)
    for sign in (-1.0, 1.0):
        u = short & (np.sign(d) == sign)
        if u.any():
            sp = supported & (np.sign(d) == sign)
            refit |= u & ~continues_supported(u, np.abs(d), sp, np.abs(d), cfg)
    return refit


@numba.njit(cache=True, nogil=True)
def _first_witness(zf, mf, n_next):
    """Per pixel of ``zf`` (n, P): the index of the first observation (-1 where it is
    missing, unmatched, or followed by fewer than ``n_next`` observations), its elevation,
    and the median of the next ``n_next`` observations (the surface that followed it)."""
    n, P = zf.shape
    f = np.full(P, -1, np.int64)
    z0 = np.full(P, np.nan, np.float32)
    after = np.full(P, np.nan, np.float32)
    buf = np.empty(max(n_next, 1), np.float64)
    for p in range(P):
        i = 0
        while i < n and not np.isfinite(zf[i, p]):
            i += 1
        if i == n or not mf[i, p]:
            continue
        cnt = 0
        j = i + 1
        while j < n and cnt < n_next:
            if np.isfinite(zf[j, p]):
                buf[cnt] = zf[j, p]
                cnt += 1
            j += 1
        if cnt < n_next:
            continue
        f[p] = i
        z0[p] = zf[i, p]
        after[p] = _median(buf, cnt)
    return f, z0, after


def first_witness_drops(zf: np.ndarray, mf: np.ndarray, dates: np.ndarray, trusted: np.ndarray, out: dict,
                        shape: tuple[int, int], cfg: ChangeConfig, lat_deg: float) -> np.ndarray:
    """Pixels whose only witness of the surface before a drop is the first acquisition,
    and which continue supported loss: updates ``out`` in place, returns their mask (H, W).

    A headwall that retreats between the first acquisition and the second leaves a band
    seen higher by that one acquisition alone. Where the acquisition is out of season, or
    disagrees with the rest of the series, the per-pixel model rejects it (it could be a
    cloud or a drift), and the band's loss is lost: the scar is mapped short and its volume
    low. Here a first observation that the fit rejected, or kept at its low weight without a
    step, and that lies at least ``first_witness_min_dh_m`` above the surface that followed it
    is restored as the level before a drop where the pixel's own fit shows no change (|dh| below
    ``unsupported_min_dh_m``: snow or a cloud in the first strip over ground that dropped
    later is not added to that drop), the pixel joins supported drops (8-connected) and the drop
    is no larger than ``unsupported_magnitude_factor`` x the largest supported drop it
    joins + ``unsupported_margin_m``: the first and earliest seasons of a retreating
    headwall, next to the bands it cut later. A blob in the first acquisition that joins
    nothing, or is much higher than the scar beside it, stays rejected; so does a snow bank
    beside a scar on ground that never changed, up to the threshold (a deeper bank there cannot
    be told from such a band). The restored step rests on one observation, so it is never
    confident (``n_before`` = 0 or 1) and its sigma includes the lone observation's
    (``sigma_matched_m``, or ``sigma_snow_season_m`` out of season). The witness and the
    pixel's first later observation past halfway down to that surface must bound at least
    ``first_witness_min_thaw_days`` of the snow-free window at ``lat_deg`` (degrees N): the
    ground cannot drop between two acquisitions of one spring."""
    H, W = shape
    restored = np.zeros(H * W, bool)
    if zf.shape[0] < 2 or cfg.first_witness_next_obs < 1:
        return restored.reshape(H, W)
    f, z0, after = _first_witness(zf, mf, cfg.first_witness_next_obs)
    drop = (after - z0).astype(np.float32)
    dh, sig = out["dh"], out["sig"]
    # the fit left the first observation out, or kept it at low weight without a step (its
    # level is then in neither side of a drop), and shows no change of its own: snow or a cloud
    # in the first strip over ground that dropped later is not added to that drop, nor is a
    # drop the fit already holds counted again
    cand = ((f >= 0) & np.isfinite(dh) & (drop <= -cfg.first_witness_min_dh_m) & (out["first"] >= f)
            & (np.abs(dh) < cfg.unsupported_min_dh_m))
    if cand.any() and cfg.first_witness_min_thaw_days > 0:
        # the ground can only have dropped while it thawed: the witness and the pixel's next
        # observation past halfway down to the surface that followed it, both before the
        # snow-free window of one spring, bound no thaw (the witness saw snow, or a cloud)
        ci = np.flatnonzero(cand)
        witness = np.arange(zf.shape[0])[:, None] == f[ci][None, :]
        cand[ci] = could_have_fallen(zf[:, ci], dates, witness, z0[ci] + 0.5 * drop[ci], lat_deg, cfg)
    if not cand.any():
        return restored.reshape(H, W)
    drops = np.isfinite(dh) & (dh <= -cfg.unsupported_min_dh_m) & (np.abs(dh) >= cfg.confidence_nsigma * sig)
    supported = drops & (np.minimum(out["nb"], out["na"]) >= cfg.min_support_obs)
    if not supported.any():
        return restored.reshape(H, W)
    # the drops kept by the refit though unsupported join supported ones: they connect too
    ok = continues_supported(cand.reshape(H, W), -drop.reshape(H, W), supported.reshape(H, W),
                             -np.nan_to_num(dh).reshape(H, W), cfg, connect=drops.reshape(H, W)).ravel()
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return restored.reshape(H, W)
    # the restored drop (>= first_witness_min_dh_m) is the pixel's step: its own fit showed none
    fi = f[idx]
    lone_sigma = np.where(trusted[fi], cfg.sigma_matched_m, cfg.sigma_snow_season_m).astype(np.float32)
    # the fit either left the first observation out or kept it at its low weight (out of
    # season, alone on its side): either way every trusted epoch after it lies after the drop
    kept = out["first"][idx] == fi
    n_after = out["nb"][idx] + out["na"][idx] - (kept & trusted[fi]).astype(out["nb"].dtype)
    # the drop ends at the next observation of the pixel after the witness
    rows = np.arange(zf.shape[0])[:, None]
    nxt = np.argmax(np.isfinite(zf[:, idx]) & (rows > fi[None, :]), axis=0)
    out["dh"][idx] += drop[idx]
    out["sig"][idx] = np.sqrt(out["sig"][idx] ** 2 + lone_sigma ** 2)
    out["t1"][idx] = dates[fi]
    out["t2"][idx] = dates[np.where(kept, nxt, out["first"][idx])]
    out["nb"][idx] = trusted[fi]
    out["na"][idx] = n_after
    restored[idx] = True
    return restored.reshape(H, W)


def detect_steps(z: np.ndarray, matched: np.ndarray, dates: np.ndarray, cfg: ChangeConfig, *,
                 lat_deg: float | None = None) -> ChangeResult:
    """Dominant step per pixel of the coregistered stack ``z`` (n, H, W), NaN = no data.

    ``dates``: (n,) acquisition dates as days since 2000-01-01, ascending.
    ``matched``: (n, H, W) True for matchtag-1 observations.
    ``lat_deg``: latitude of the cell (the snow-free window); ``cfg.default_latitude_deg``
    when None.
    """
    n, H, Wd = z.shape
    dates = np.asarray(dates)
    if n and np.any(np.diff(dates) < 0):
        raise ValueError("detect_steps: dates must be ascending")
    lat = cfg.default_latitude_deg if lat_deg is None else float(lat_deg)
    trusted = trusted_acquisitions(dates, lat, cfg) if n else np.zeros(0, bool)
    shoulder = shoulder_acquisitions(dates, lat, cfg) if n else np.zeros(0, bool)
    P = H * Wd
    zf = np.ascontiguousarray(z.reshape(n, P), dtype=np.float32)  # views where the stack is already so
    mf = np.ascontiguousarray(matched.reshape(n, P), dtype=np.bool_)
    lo = np.zeros(P, np.int64)
    hi = np.full(P, n, np.int64)
    out = _run_kernel(zf, mf, trusted, shoulder, dates, lo, hi, cfg)
    if n:
        refit = unsupported_to_refit(out["dh"].reshape(H, Wd), out["sig"].reshape(H, Wd), out["nb"].reshape(H, Wd),
                                     out["na"].reshape(H, Wd), cfg).ravel()
        spring = spring_only_drops(zf, dates, out, lat, cfg)
        refit |= spring
        idx = np.flatnonzero(refit)
        if idx.size:
            # a step no thaw can have made keeps the observations after it, whatever their support
            short_before = (out["nb"][idx] < out["na"][idx]) | spring[idx]
            k = out["k"][idx]
            sub_lo = np.where(short_before, k, 0).astype(np.int64)
            sub_hi = np.where(short_before, n, k).astype(np.int64)
            sub = _run_kernel(np.ascontiguousarray(zf[:, idx]), np.ascontiguousarray(mf[:, idx]), trusted, shoulder,
                              dates,
                              sub_lo, sub_hi, cfg)
            for key in ("dh", "sig", "t1", "t2", "nb", "na", "first"):
                out[key][idx] = sub[key]
            # the pixel's observation count stays the whole series' (it was seen that often)
        restored = first_witness_drops(zf, mf, dates, trusted, out, (H, Wd), cfg, lat)
    dh, sig = out["dh"].reshape(H, Wd), out["sig"].reshape(H, Wd)
    t1, t2 = out["t1"].reshape(H, Wd), out["t2"].reshape(H, Wd)
    nobs = out["nused"].reshape(H, Wd)
    nb, na = out["nb"].reshape(H, Wd), out["na"].reshape(H, Wd)
    conf = confidence_flag(dh, sig, t1, t2, nobs, cfg, nb, na)
    if n:
        conf[restored] = 0  # one witness: never confident
    return ChangeResult(dh, sig, t1, t2, nobs, conf, nb, na)


def confidence_flag(dh, sig, t1, t2, nobs, cfg: ChangeConfig, n_before=None, n_after=None) -> np.ndarray:
    """1 where the step is confident (see module docstring), 0 where not, 255 undefined."""
    defined = np.isfinite(dh)
    t_event = np.where(defined, (t1.astype(np.float64) + t2) / 2.0, np.nan)
    # 3x3 standard deviation of event time, NaN-aware
    ones = defined.astype(np.float64)
    te = np.nan_to_num(t_event)
    cnt = ndimage.uniform_filter(ones, 3, mode="constant")
    with np.errstate(all="ignore"):
        mean = ndimage.uniform_filter(te, 3, mode="constant") / cnt
        mean2 = ndimage.uniform_filter(te * te, 3, mode="constant") / cnt
        spread = np.sqrt(np.maximum(mean2 - mean * mean, 0.0))
        ok = (
            defined
            & (np.abs(dh) >= cfg.confidence_nsigma * sig)
            & (nobs >= cfg.confidence_min_obs)
            & (sig < cfg.confidence_max_sigma_m)
            & (spread < cfg.confidence_max_time_spread_days)
        )
    if n_before is not None and n_after is not None:
        ok &= np.minimum(n_before, n_after) >= cfg.min_support_obs
    return np.where(defined, ok.astype(np.uint8), 255).astype(np.uint8)

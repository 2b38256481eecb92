"""Gaussian expectations of an activation: the one integral of the infinite-width limit.

For `(u, v)` centred Gaussian with covariance `[[s11, s12], [s12, s22]]` a layer of the
limit needs `L = E[sigma(u) sigma(v)]` and `D = E[sigma'(u) sigma'(v)]`. Every method
is a class behind `AbstractQuadrature`: `ClosedForm` (relu: arc-cosine kernels of
degrees 1 and 0; erf: arcsine; identity), `GaussHermite` (tensor rule, smooth
activations) and `PolarQuadrature` (angular panels ending at the kinks, exact in the
radius for positively homogeneous pieces such as relu).
"""

from __future__ import annotations

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._activation import AbstractActivation, Erf, Identity, Relu, as_activation
from .._checks import positive_int



_SPLIT = 134217729.0  # 2^27 + 1: Veltkamp's splitting of a float64 into two 26-bit halves


def _split(a):
    """`(high, low)` with `a = high + low` exactly, each of at most 26 bits (Veltkamp)."""
    high = _SPLIT * a
    high -= high - a
    return high, a - high


def _determinant(s11, s12, s22):
    """`max(s11 s22 - s12^2, 0)` to a few ulps of itself, not of `s11 s22`.

    Where the difference cancels (`s12^2 > s11 s22 / 2`) the products are taken
    error-free (Dekker: `x y = p + e` exactly), so nearly degenerate covariances keep
    their small determinant (and the angle of nearly parallel inputs its digits), and
    `s12^2 >= s11 s22` (e.g. `s12 = s11 = s22`) gives exactly 0."""
    p, q = s11 * s22, s12 * s12
    det = p - q
    close = np.nonzero(det < 0.5 * p)  # elsewhere det keeps all but a few ulps
    p, q, a, b, c = p[close], q[close], s11[close], s22[close], s12[close]
    with np.errstate(invalid="ignore", over="ignore"):  # |entries| > 1e290: plain products
        ah, al = _split(a)
        bh, bl = _split(b)
        ch, cl = _split(c)
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl  # s11 s22 = p + e
        f = ((ch * ch - q) + 2.0 * ch * cl) + cl * cl  # s12^2 = q + f
        exact = (p - q) + (e - f)  # p - q is exact for p/2 <= q <= 2p (Sterbenz)
    det[close] = np.where(np.isfinite(exact), exact, p - q)
    return np.maximum(det, 0.0)


def _relu(s11, s12, s22):
    """Arc-cosine kernels (Cho & Saul): degree 1 for relu, degree 0 for its step.

    With `norm = sqrt(s11 s22)`, `norm sin(theta) = sqrt(det)` and `norm cos(theta) =
    s12`: the angle is `arctan2(sqrt(det), s12)` (not `arccos(s12 / norm)`, whose
    rounding near `|rho| = 1` is amplified to ~1e-8), exactly 0 for `s12 = s11 = s22`,
    where `E[sigma sigma] = s / 2` and `E[sigma' sigma'] = 1 / 2` come out exact."""
    norm = np.sqrt(s11 * s22)
    root = np.sqrt(_determinant(s11, s12, s22))  # norm sin(theta) = norm sqrt(1 - rho^2)
    cross = np.clip(s12, -norm, norm)  # norm cos(theta) = norm rho
    theta = np.where(norm > 0, np.arctan2(root, cross), np.pi / 2)
    slope = (np.pi - theta) / (2 * np.pi)
    # norm / (2 pi) (sin(theta) + (pi - theta) cos(theta))
    value = np.where(norm > 0, root / (2 * np.pi) + slope * cross, 0.0)
    return value, slope


def _erf(s11, s12, s22):
    """Williams' arcsine kernel, and `E[erf'(u) erf'(v)] = 4/pi det(I + 2 S)^(-1/2)`."""
    a, b = 1.0 + 2.0 * s11, 1.0 + 2.0 * s22
    value = (2 / np.pi) * np.arcsin(np.clip(2.0 * s12 / np.sqrt(a * b), -1.0, 1.0))
    slope = (4 / np.pi) / np.sqrt(a * b - 4.0 * s12**2)
    return value, slope


def _identity(s11, s12, s22):
    return np.array(s12, dtype=float), np.ones_like(s12, dtype=float)


_CLOSED_FORMS = {Relu: _relu, Erf: _erf, Identity: _identity}



_BLOCK = 1 << 16  # points per activation call: one compilation serves every rule and shape


@eqx.filter_jit
def _block(activation, points):
    """`sigma` and `sigma'` elementwise (sigma' by a forward-mode derivative)."""
    return jax.jvp(activation, (points,), (jnp.ones_like(points),))


def _values_and_slopes(activation, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`sigma(points)`, `sigma'(points)` in float64, evaluated in blocks of one size."""
    flat = np.ravel(points)
    padded = np.zeros(-(-flat.size // _BLOCK) * _BLOCK)
    padded[: flat.size] = flat
    values, slopes = np.empty_like(padded), np.empty_like(padded)
    for start in range(0, padded.size, _BLOCK):
        part = slice(start, start + _BLOCK)
        value, slope = _block(activation, jnp.asarray(padded[part], dtype=jnp.float64))
        values[part], slopes[part] = np.asarray(value), np.asarray(slope)
    return values[: flat.size].reshape(np.shape(points)), slopes[: flat.size].reshape(np.shape(points))


def _cholesky(s11, s12, s22):
    """`u = a z1`, `v = b z1 + c z2` with `(z1, z2)` standard normal."""
    a = np.sqrt(np.maximum(s11, 0.0))
    b = np.divide(s12, a, out=np.zeros_like(a), where=a > 0)
    det = _determinant(s11, s12, s22)  # exactly 0 for |s12| >= sqrt(s11 s22)
    c = np.where(a > 0, np.sqrt(np.divide(det, s11, out=np.zeros_like(a), where=a > 0)),
                 np.sqrt(np.maximum(s22, 0.0)))
    return a, b, c


def _chunks(size: int, per_pair: int, budget: int = 1 << 20):
    """Slices of at most `budget / per_pair` pairs (bounded memory)."""
    step = max(1, budget // per_pair)
    return [slice(i, min(i + step, size)) for i in range(0, size, step)]


def _gauss_hermite(activation, s11, s12, s22, nodes):
    with np.errstate(all="ignore"):  # the outermost weights underflow to 0 for many nodes
        z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)  # weights of the standard normal
    a, b, c = _cholesky(s11, s12, s22)
    value, slope = np.empty_like(a), np.empty_like(a)
    for part in _chunks(a.size, nodes * nodes):
        u = a[part, None] * z  # (p, N)
        v = b[part, None, None] * z[:, None] + c[part, None, None] * z[None, :]  # (p, N, N)
        su, du = _values_and_slopes(activation, u)
        sv, dv = _values_and_slopes(activation, v)
        value[part] = np.einsum("i,pi,j,pij->p", w, su, w, sv)
        slope[part] = np.einsum("i,pi,j,pij->p", w, du, w, dv)
    return value, slope


def _polar(activation, s11, s12, s22, angular, radial):
    x, wx = np.polynomial.legendre.leggauss(angular)
    s, ws = np.polynomial.laguerre.laggauss(radial)
    r = np.sqrt(2.0 * s)  # int_0^inf g(r) r e^(-r^2/2) dr = int_0^inf g(sqrt(2s)) e^(-s) ds
    a, b, c = _cholesky(s11, s12, s22)
    # u = a r cos(t) vanishes at t = pi/2, 3pi/2; v = r R cos(t - phi) at phi +- pi/2.
    phi = np.arctan2(c, b)
    cuts = np.stack([np.zeros_like(a), np.full_like(a, np.pi / 2), np.full_like(a, 1.5 * np.pi),
                     np.mod(phi + np.pi / 2, 2 * np.pi), np.mod(phi - np.pi / 2, 2 * np.pi),
                     np.full_like(a, 2 * np.pi)], axis=-1)
    cuts = np.sort(cuts, axis=-1)
    lo, hi = cuts[:, :-1], cuts[:, 1:]  # (p, 5) panels, some of zero length
    value, slope = np.empty_like(a), np.empty_like(a)
    for part in _chunks(a.size, 5 * angular * radial):
        t = 0.5 * (lo[part, :, None] + hi[part, :, None]) + 0.5 * (hi - lo)[part, :, None] * x
        wt = 0.5 * (hi - lo)[part, :, None] * wx  # (p, 5, A)
        cos, sin = np.cos(t)[..., None], np.sin(t)[..., None]
        u = a[part, None, None, None] * r * cos  # (p, 5, A, R)
        v = r * (b[part, None, None, None] * cos + c[part, None, None, None] * sin)
        su, du = _values_and_slopes(activation, u)
        sv, dv = _values_and_slopes(activation, v)
        value[part] = np.einsum("pka,r,pkar->p", wt, ws, su * sv) / (2 * np.pi)
        slope[part] = np.einsum("pka,r,pkar->p", wt, ws, du * dv) / (2 * np.pi)
    return value, slope



class AbstractQuadrature(eqx.Module):
    """A way to compute the Gaussian expectations `(L, D)` of an activation."""

    @abc.abstractmethod
    def expectations(self, activation: AbstractActivation, s11: np.ndarray, s12: np.ndarray,
                     s22: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)])` on flat arrays."""


class ClosedForm(AbstractQuadrature):
    """Use the closed-form Gaussian expectations of the activation (relu, erf,
    identity); an error for any other activation."""

    def expectations(self, activation, s11, s12, s22):
        form = _CLOSED_FORMS.get(type(activation))
        if form is None:
            raise ValueError(
                f"quadrature=ClosedForm(): {activation.name} has no closed-form Gaussian "
                f"expectations (known: {sorted(k.__name__.lower() for k in _CLOSED_FORMS)}). "
                "Use quadrature=GaussHermite(nodes=128) (smooth) or PolarQuadrature() (kinked)."
            )
        return form(s11, s12, s22)


class GaussHermite(AbstractQuadrature):
    """Tensor Gauss-Hermite quadrature with `nodes` points per dimension
    (`nodes^2` evaluations per pair of inputs). For smooth activations the error
    falls like `exp(-c sqrt(nodes))`, `c` set by the distance of the activation's
    complex poles from the real axis in units of the standard deviation (tanh at
    variance 1.6: 6e-5 with 64 nodes, 3e-7 with 128, 1e-10 with 256); across a kink
    only algebraically (use `PolarQuadrature`)."""

    nodes: int = eqx.field(static=True, default=128)

    def __check_init__(self):
        positive_int(self.nodes, "GaussHermite(nodes)")
        if self.nodes > 350:
            raise ValueError(
                f"GaussHermite(nodes)={self.nodes}: numpy's Gauss-Hermite weights overflow "
                "above 350 nodes; use at most 350 (or PolarQuadrature() for kinked activations)."
            )

    def expectations(self, activation, s11, s12, s22):
        return _gauss_hermite(activation, s11, s12, s22, self.nodes)


class PolarQuadrature(AbstractQuadrature):
    """Quadrature in polar coordinates of the standard Gaussian `(z1, z2)`:
    Gauss-Legendre with `angular` nodes on each of the (up to 5) angular panels
    between the rays where `u = 0` or `v = 0`, and Gauss-Laguerre with `radial`
    nodes in `s = r^2 / 2`. For activations that are smooth except at 0 (relu) the
    integrand is smooth on every panel, and for positively homogeneous ones it is
    a polynomial in `s`: the rule is then exact in the radius."""

    angular: int = eqx.field(static=True, default=32)
    radial: int = eqx.field(static=True, default=16)

    def __check_init__(self):
        positive_int(self.angular, "PolarQuadrature(angular)")
        positive_int(self.radial, "PolarQuadrature(radial)")

    def expectations(self, activation, s11, s12, s22):
        return _polar(activation, s11, s12, s22, self.angular, self.radial)


def _default_quadrature(activation: AbstractActivation):
    if type(activation) in _CLOSED_FORMS:
        return ClosedForm()
    return GaussHermite() if activation.smooth else PolarQuadrature()


def gaussian_expectations(
    activation: str | AbstractActivation,
    s11: Any,
    s12: Any,
    s22: Any,
    *,
    quadrature: AbstractQuadrature | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)])` for `(u, v)` centred Gaussian
    with variances `s11`, `s22` and covariance `s12` (arrays of one shape).

    **Arguments:**

    - `activation`: a name or an activation object.
    - `s11`, `s12`, `s22`: the covariance entries, broadcast together.
    - `quadrature`: `ClosedForm()`, `GaussHermite(nodes)` or
      `PolarQuadrature(angular, radial)`; by default the closed form where one
      exists (relu, erf, identity), else Gauss-Hermite for smooth activations and
      the polar rule for kinked ones.

    **Returns:** two float64 arrays of the broadcast shape.
    """
    activation = as_activation(activation)
    entries = [np.asarray(s, dtype=np.float64) for s in (s11, s12, s22)]
    try:
        s11, s12, s22 = np.broadcast_arrays(*entries)
    except ValueError:
        raise ValueError(
            f"s11, s12, s22 have shapes {entries[0].shape}, {entries[1].shape}, "
            f"{entries[2].shape}, which do not broadcast together: pass arrays of one shape "
            "(or scalars)."
        ) from None
    for name, s in (("s11", s11), ("s12", s12), ("s22", s22)):
        if not np.all(np.isfinite(s)):
            i = tuple(int(k) for k in np.argwhere(~np.isfinite(s))[0])
            where = f" at index {i}" if i else ""
            raise ValueError(f"{name} has a non-finite value ({s[i]}){where}: pass finite "
                             "covariance entries.")
    bad = (s11 < 0) | (s22 < 0) | (s12**2 > s11 * s22 * (1 + 1e-12) + 1e-300)
    if np.any(bad):
        i = np.argwhere(bad)[0]
        raise ValueError(
            "s11, s12, s22 do not form a covariance matrix"
            + (f" at index {tuple(int(k) for k in i)}" if i.size else "") + ": "
            f"s11={s11[tuple(i)]:.6g}, s12={s12[tuple(i)]:.6g}, s22={s22[tuple(i)]:.6g}. Pass "
            "s11 >= 0, s22 >= 0 and s12^2 <= s11 s22 (e.g. s12 = rho sqrt(s11 s22), |rho| <= 1)."
        )
    quadrature = _default_quadrature(activation) if quadrature is None else quadrature
    shape = s11.shape
    flat = [s.ravel() for s in (s11, s12, s22)]
    if not isinstance(quadrature, AbstractQuadrature):
        raise TypeError(
            f"quadrature={quadrature!r}: pass nthdyn.ClosedForm(), nthdyn.GaussHermite(nodes=128), "
            "nthdyn.PolarQuadrature() or None (automatic)."
        )
    value, slope = quadrature.expectations(activation, *flat)
    return np.asarray(value, dtype=np.float64).reshape(shape), np.asarray(slope, dtype=np.float64).reshape(shape)

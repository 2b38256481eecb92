"""Infinite-width kernels: the NNGP kernel and the limiting NTK of both network families.

Both recursions run over layers on three arrays: the covariance `S(x, x')` of the
preactivations of one unit (for the pairs asked for, and on the diagonals), and the
tangent kernel `T(x, x')` of those preactivations. A layer needs two Gaussian
expectations over `(u, v) ~ N(0, [[S(x,x), S(x,x')], [S(x,x'), S(x',x')]])`:

    L = E[sigma(u) sigma(v)],   D = E[sigma'(u) sigma'(v)].

Jacot et al. (paper 003, Prop. 1 and Thm. 1), `JacotMLP`, maps `k = 0..H`
(`H = depth`, `L_Jacot = H + 1`):

    S_1 = x.x'/d + beta^2,           T_1 = [0 trained] S_1
    S_{l+1} = L_l + beta^2,          T_{l+1} = D_l T_l + [l trained] S_{l+1}
    NNGP = S_{H+1},                  NTK = T_{H+1}.

Huang & Yau's parametrization, `MLP` (eq. (1)-(2): no `1/sqrt(d)` on the first
layer, `1/sqrt(m)` after the activation, no biases), derived in docs/limits.md:

    S_1 = sw^2 x.x',                 T_1 = [0 trained] x.x'
    S_{l+1} = sw^2 L_l,              T_{l+1} = [l trained] L_l + sw^2 D_l T_l
    NNGP = sa^2 L_H,                 NTK = [H trained] L_H + sa^2 D_H T_H.

`[k trained]` is 1 unless linear map `k` is frozen: a frozen map drops its own
term and nothing else (its weights still shape the forward pass).

The expectations come in closed form where one exists (relu: arc-cosine kernels of
degrees 1 and 0; erf: arcsine; identity) and otherwise by quadrature: a tensor
Gauss-Hermite rule for smooth activations, and for activations with a kink at 0
(relu) a polar rule whose angular panels end at the kinks, which is exact in the
radius for positively homogeneous pieces.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._activation import AbstractActivation, Erf, Identity, Relu
from ._checks import positive_int
from ._data import check_inputs
from ._network import JacotMLP, MLP

__all__ = [
    "ClosedForm",
    "GaussHermite",
    "PolarQuadrature",
    "LimitingKernels",
    "gaussian_expectations",
    "limiting_kernels",
]


# --------------------------------------------------------------------------- methods


class ClosedForm(eqx.Module):
    """Use the closed-form Gaussian expectations of the activation (relu, erf,
    identity); an error for any other activation."""


class GaussHermite(eqx.Module):
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


class PolarQuadrature(eqx.Module):
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


AbstractQuadrature = ClosedForm | GaussHermite | PolarQuadrature


# ------------------------------------------------------------------- closed forms


def _relu(s11, s12, s22):
    """Arc-cosine kernels (Cho & Saul): degree 1 for relu, degree 0 for its step."""
    norm = np.sqrt(s11 * s22)
    rho = np.clip(np.divide(s12, norm, out=np.zeros_like(norm), where=norm > 0), -1.0, 1.0)
    theta = np.arccos(rho)
    value = norm / (2 * np.pi) * (np.sqrt(1.0 - rho**2) + (np.pi - theta) * rho)
    slope = (np.pi - theta) / (2 * np.pi)
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


# --------------------------------------------------------------------- quadrature


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
    det = np.maximum(s11 * s22 - s12**2, 0.0)  # exactly 0 for s12 = +-s11 = +-s22
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
    from ._activation import as_activation

    activation = as_activation(activation)
    s11, s12, s22 = np.broadcast_arrays(*(np.asarray(s, dtype=np.float64) for s in (s11, s12, s22)))
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
    if isinstance(quadrature, ClosedForm):
        form = _CLOSED_FORMS.get(type(activation))
        if form is None:
            raise ValueError(
                f"quadrature=ClosedForm(): {activation.name} has no closed-form Gaussian "
                f"expectations (known: {sorted(k.__name__.lower() for k in _CLOSED_FORMS)}). "
                "Use quadrature=GaussHermite(nodes=128) (smooth) or PolarQuadrature() (kinked)."
            )
        value, slope = form(*flat)
    elif isinstance(quadrature, GaussHermite):
        value, slope = _gauss_hermite(activation, *flat, quadrature.nodes)
    elif isinstance(quadrature, PolarQuadrature):
        value, slope = _polar(activation, *flat, quadrature.angular, quadrature.radial)
    else:
        raise TypeError(
            f"quadrature={quadrature!r}: pass nthdyn.ClosedForm(), nthdyn.GaussHermite(nodes=128), "
            "nthdyn.PolarQuadrature() or None (automatic)."
        )
    return np.asarray(value, dtype=np.float64).reshape(shape), np.asarray(slope, dtype=np.float64).reshape(shape)


# ---------------------------------------------------------------------- recursion


class LimitingKernels(NamedTuple):
    """The infinite-width kernels between two sets of inputs (float64 numpy arrays).

    - `nngp`: the covariance of the network output at initialization (the NNGP
      kernel; Jacot's `Sigma^(L)`).
    - `ntk`: the limiting NTK (Jacot's `Theta_inf^(L)`, Huang & Yau's `K_inf^(2)`, eq. (8)).
    """

    nngp: np.ndarray
    ntk: np.ndarray


class _Pairs(NamedTuple):
    """Cross entries `c` (n1, n2) and the diagonals `d1` (n1,), `d2` (n2,)."""

    c: np.ndarray
    d1: np.ndarray
    d2: np.ndarray

    def map(self, fn):
        return _Pairs(fn(self.c), fn(self.d1), fn(self.d2))


def _expect(activation, S: _Pairs, quadrature):
    """`L` on the pairs and diagonals, `D` on the pairs."""
    bound = np.sqrt(np.outer(S.d1, S.d2))  # quadrature error may break Cauchy-Schwarz by ~1 ulp
    value, slope = gaussian_expectations(activation, S.d1[:, None], np.clip(S.c, -bound, bound),
                                         S.d2[None, :], quadrature=quadrature)
    diagonal = [gaussian_expectations(activation, d, d, d, quadrature=quadrature)[0]
                for d in (S.d1, S.d2)]
    return _Pairs(value, *diagonal), slope


def _huang_yau(net: MLP, inner: _Pairs, quadrature):
    trained = net.trained_maps()
    S = inner.map(lambda a: net.sw**2 * a)
    T = inner.c if 0 in trained else np.zeros_like(inner.c)
    for layer in range(1, net.depth + 1):
        L, D = _expect(net.activation, S, quadrature)
        if layer < net.depth:
            T = (L.c if layer in trained else 0.0) + net.sw**2 * D * T
            S = L.map(lambda a: net.sw**2 * a)
    nngp = net.sa**2 * L.c
    ntk = (L.c if net.depth in trained else 0.0) + net.sa**2 * D * T
    return nngp, ntk


def _jacot(net: JacotMLP, inner: _Pairs, quadrature):
    trained = net.trained_maps()
    beta2 = net.beta**2
    S = inner.map(lambda a: a / net.in_size + beta2)
    T = S.c if 0 in trained else np.zeros_like(S.c)
    for layer in range(1, net.depth + 1):
        L, D = _expect(net.activation, S, quadrature)
        S = L.map(lambda a: a + beta2)
        T = D * T + (S.c if layer in trained else 0.0)
    return S.c, T


def limiting_kernels(
    network: MLP | JacotMLP,
    X1: Any,
    X2: Any = None,
    *,
    quadrature: AbstractQuadrature | None = None,
) -> LimitingKernels:
    """The infinite-width NNGP kernel and limiting NTK of `network`'s architecture.

    Only the hyperparameters are used (activation, depth, `sw`, `sa` or `beta`,
    `frozen`); the width and the weights are not. A width-1 network is a cheap
    description: `limiting_kernels(net.remake(width=1), X)`.

    **Arguments:**

    - `network`: an `MLP` (Huang-Yau parametrization) or a `JacotMLP`.
    - `X1`: inputs `(n1, d)`.
    - `X2`: second inputs `(n2, d)`; `None` for `X1` again.
    - `quadrature`: how the Gaussian expectations are computed; see
      `gaussian_expectations`.

    **Returns:** `LimitingKernels(nngp, ntk)`, each `(n1, n2)`, float64.

    Cost: `O(n1 n2 H)` with closed forms, times `nodes^2` (Gauss-Hermite) or
    `5 angular radial` (polar) evaluations of the activation with quadrature.
    """
    if not isinstance(network, (MLP, JacotMLP)):
        raise TypeError(
            f"network={type(network).__name__}: the infinite-width recursions are known for "
            "nthdyn.MLP (Huang-Yau) and nthdyn.JacotMLP; pass one of those (any width)."
        )
    X1 = np.asarray(check_inputs(X1, "X1", in_size=network.in_size), dtype=np.float64)
    X2 = X1 if X2 is None else np.asarray(check_inputs(X2, "X2", in_size=network.in_size),
                                          dtype=np.float64)
    inner = _Pairs(X1 @ X2.T, np.sum(X1**2, axis=1), np.sum(X2**2, axis=1))
    recursion = _huang_yau if isinstance(network, MLP) else _jacot
    nngp, ntk = recursion(network, inner, quadrature)
    return LimitingKernels(np.asarray(nngp, dtype=np.float64), np.asarray(ntk, dtype=np.float64))


# ------------------------------------------------------- limits from ensembles


_SLOTS = ("sample", "sample_b", "sample_c", "sample_d", "sample_e", "sample_f")


def estimate_kernel_limit(
    network: Any,
    X: Any,
    *,
    widths: Any,
    seeds: Any,
    order: int = 2,
    kernel: Any = None,
    master_seed: int = 0,
    quadrature: AbstractQuadrature | None = None,
):
    """The seed mean of `m^(r/2 - 1) K(r)` at initialization, with its standard
    error, for each width `m`: an estimate of the deterministic limit `frak K^(r)`
    of Huang & Yau eq. (11) (zero for odd `r`).

    **Arguments:**

    - `network`: a network whose `remake(width=m, key=k)` gives the members.
    - `X`: inputs `(n, d)`.
    - `widths`, `seeds`: the widths `m`, and the integer seeds; member `s` is
      initialised from `jax.random.fold_in(jax.random.key(master_seed), s)`
      (as in `EnsembleProblem`).
    - `order`: `r >= 2`.
    - `kernel`: a function `(network, X) -> K(r)` of shape `(n,) * r`; by default the
      structured NTK for `r = 2` and `nthdyn.hierarchy_kernel(network, X, r)` above.
    - `quadrature`: for the limiting NTK (see `limiting_kernels`).

    **Returns:** an `xarray.Dataset` with dimensions `width` and `sample`,
    `sample_b`, ...: `K_mean`, `K_stderr` (seed standard deviation / sqrt(seeds)),
    `K_std` (seed standard deviation), and for `r = 2` with an `MLP` or `JacotMLP`
    also `K_limit` (the limiting NTK) and `z = (K_mean - K_limit) / K_stderr`.

    Cost: `len(widths) * len(seeds)` initializations and kernels.
    """
    import xarray as xr

    from ._io import provenance
    from ._kernels import _ntk
    from ._network import AbstractNetwork

    if not isinstance(network, AbstractNetwork):
        raise TypeError(f"network={type(network).__name__}: pass an nthdyn network such as "
                        "nthdyn.MLP(in_size=3, width=1, depth=2, key=0).")
    order = positive_int(order, "order", minimum=2)
    X = check_inputs(X, "X", in_size=network.in_size)
    widths = [positive_int(m, "widths") for m in np.atleast_1d(np.asarray(widths)).tolist()]
    seeds = [positive_int(s, "seeds", minimum=0) for s in np.atleast_1d(np.asarray(seeds)).tolist()]
    if len(seeds) < 2:
        raise ValueError(f"seeds={seeds!r}: a standard error needs at least 2 seeds.")
    keys = [jax.random.fold_in(jax.random.key(master_seed), s) for s in seeds]
    if kernel is None and order == 2:
        def kernel(net, X):  # structured for layered networks; one compilation per width
            return _ntk(net, X, None)
    elif kernel is None:
        from ._hierarchy import hierarchy_kernel

        def kernel(net, X):
            return hierarchy_kernel(net, X, order)

    def member_kernel(net, m, key):
        return kernel(net.remake(width=m, key=key), X)

    shape = (len(widths),) + (X.shape[0],) * order
    mean, std = np.empty(shape), np.empty(shape)
    for i, m in enumerate(widths):
        samples = []
        for key in keys:
            sample = np.asarray(member_kernel(network, m, key), dtype=np.float64)
            if sample.shape != shape[1:]:
                raise ValueError(f"kernel returned shape {sample.shape}; expected {shape[1:]} "
                                 f"(order={order} slots of n={X.shape[0]} inputs).")
            samples.append(m ** (order / 2 - 1) * sample)
        samples = np.stack(samples)
        mean[i], std[i] = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    dims = ("width",) + _SLOTS[:order]
    name = f"m^({order}/2-1) K({order})" if order != 2 else "K2"
    data_vars = {
        "K_mean": (dims, mean, {"long_name": f"seed mean of {name} at initialization (eq. 11)",
                              "units": "1"}),
        "K_std": (dims, std, {"long_name": f"seed standard deviation of {name}", "units": "1"}),
        "K_stderr": (dims, std / np.sqrt(len(seeds)),
                   {"long_name": f"standard error of the seed mean of {name}", "units": "1"}),
        "X": (("sample", "input_dim"), np.asarray(X), {"long_name": "input x_a", "units": "1"}),
    }
    if order == 2 and isinstance(network, (MLP, JacotMLP)):
        limit = limiting_kernels(network, X, quadrature=quadrature).ntk
        data_vars["K_limit"] = (dims[1:], limit, {
            "long_name": "limiting NTK (infinite width, Jacot et al. Thm. 1)", "units": "1"})
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (mean - limit) / (std / np.sqrt(len(seeds)))
        data_vars["z"] = (dims, z, {"long_name": "(seed mean - limit) / standard error",
                                    "units": "1"})
    coords = {"width": ("width", np.asarray(widths), {"long_name": "hidden width m", "units": "1"})}
    for slot in dims[1:]:
        coords[slot] = (slot, np.arange(X.shape[0]), {"long_name": f"input index ({slot})",
                                                      "units": "1"})
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(provenance(
        f"seed means of m^(r/2-1) K(r) at initialization, r = {order}",
        {"network": network.config(), "order": order, "widths": widths, "seeds": seeds,
         "master_seed": master_seed}))
    ds.attrs["seed_count"] = len(seeds)
    return ds

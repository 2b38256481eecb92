"""Infinite-width kernels: the NNGP kernel and the limiting NTK of both network families.

Both recursions run over layers on three arrays: the covariance `S(x, x')` of the
preactivations of one unit (for the pairs asked for, and on the diagonals), and the
tangent kernel `T(x, x')` of those preactivations. A layer needs two Gaussian
expectations over `(u, v) ~ N(0, [[S(x,x), S(x,x')], [S(x,x'), S(x',x')]])`:

    L = E[sigma(u) sigma(v)],   D = E[sigma'(u) sigma'(v)].

The layer step of each family (the recursion over `S` and `T`) is the network's
`infinite_width` method (`MLP`: Huang & Yau's parametrization, derived in
docs/limits.md; `JacotMLP`: Jacot et al. Prop. 1 and Thm. 1). `[k trained]` is 1
unless linear map `k` is frozen: a frozen map drops its own term and nothing else.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._data import check_inputs
from .._network import AbstractLayeredNetwork
from ._quadrature import AbstractQuadrature, gaussian_expectations


class LimitingKernels(NamedTuple):
    """The infinite-width kernels between two sets of inputs (float64 numpy arrays).

    - `nngp`: the covariance of the network output at initialization (the NNGP
      kernel; Jacot's `Sigma^(L)`).
    - `ntk`: the limiting NTK (Jacot's `Theta_inf^(L)`, Huang & Yau's `K_inf^(2)`, eq. (8)).
    """

    nngp: np.ndarray
    ntk: np.ndarray


class Pairs(NamedTuple):
    """Cross entries `c` (n1, n2) and the diagonals `d1` (n1,), `d2` (n2,)."""

    c: np.ndarray
    d1: np.ndarray
    d2: np.ndarray

    def map(self, fn):
        return Pairs(fn(self.c), fn(self.d1), fn(self.d2))


def _mirror(a: np.ndarray, block: int = 512) -> np.ndarray:
    """Copy the upper triangle of the square `a` onto its lower one, in place (by blocks:
    no temporary of the full size); `a` is then bitwise symmetric."""
    n = a.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        a[start:stop, :start] = a[:start, start:stop].T
        diagonal = a[start:stop, start:stop]
        lower = np.tril_indices(stop - start, -1)
        diagonal[lower] = diagonal.T[lower]
    return a


def _symmetric(S: Pairs) -> bool:
    """Whether the pairs are those of one set of inputs with itself (exactly)."""
    return S.c.shape[0] == S.c.shape[1] and np.array_equal(S.d1, S.d2) \
        and np.array_equal(S.c, S.c.T)


def expect(activation, S: Pairs, quadrature):
    """`L` on the pairs and diagonals, `D` on the pairs.

    Identical inputs stay identical: the diagonals are evaluated once per distinct
    variance, a pair with `c = d1 = d2` (two equal inputs) takes exactly the
    diagonal's values (whatever bits a quadrature gives at another position), and
    symmetric pairs give symmetric `L` and `D`. So `L.c` keeps `L.d` on its
    diagonal through every layer, and the angle of equal inputs is 0 exactly."""
    bound = np.sqrt(np.outer(S.d1, S.d2))  # quadrature error may break Cauchy-Schwarz by ~1 ulp
    value, slope = gaussian_expectations(activation, S.d1[:, None], np.clip(S.c, -bound, bound),
                                         S.d2[None, :], quadrature=quadrature)
    variances, which = np.unique(np.concatenate([S.d1, S.d2]), return_inverse=True)
    diagonal, diagonal_slope = gaussian_expectations(activation, variances, variances, variances,
                                                     quadrature=quadrature)
    which = np.ravel(which)
    first, second = which[: S.d1.size], which[S.d1.size:]
    value, slope = np.array(value), np.array(slope)  # own, writable copies
    if _symmetric(S):
        _mirror(value)
        _mirror(slope)
    i, j = np.nonzero((S.c == S.d1[:, None]) & (S.d1[:, None] == S.d2[None, :]))
    value[i, j], slope[i, j] = diagonal[first[i]], diagonal_slope[first[i]]
    return Pairs(value, diagonal[first], diagonal[second]), slope


def _inner_products(X1: np.ndarray, X2: np.ndarray | None) -> Pairs:
    """`Pairs(X1 X2^T, |X1|^2, |X2|^2)`, exact on identical inputs: where a row of
    `X1` equals a row of `X2` the cross entry is the very float of both squared
    norms (a BLAS product and a sum differ in the last bit, which the arc-cosine
    kernel amplifies to ~1e-8), and `X2 = None` (or `X2` equal to `X1`) gives an
    exactly symmetric matrix."""
    same = X2 is None or (X2.shape == X1.shape and np.array_equal(X1, X2))
    both = X1 if same else np.concatenate([X1, X2])
    rows, which = np.unique(both + 0.0, axis=0, return_inverse=True)  # + 0.0: -0.0 is 0.0
    which = np.ravel(which)
    first, second = (which, which) if same else (which[: len(X1)], which[len(X1):])
    norms = np.sum(rows**2, axis=1)
    c = _mirror(X1 @ X1.T) if same else X1 @ X2.T
    if same and len(rows) == len(X1):  # distinct inputs: only the diagonal
        np.fill_diagonal(c, norms[first])
    elif len(rows) < len(both):  # some inputs repeat
        i, j = np.nonzero(first[:, None] == second[None, :])
        c[i, j] = norms[first[i]]
    return Pairs(c, norms[first], norms[second])


def limiting_kernels(
    network: AbstractLayeredNetwork,
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
    if not isinstance(network, AbstractLayeredNetwork):
        raise TypeError(
            f"network={type(network).__name__}: the infinite-width recursions are known for "
            "nthdyn.MLP (Huang-Yau) and nthdyn.JacotMLP; pass one of those (any width)."
        )
    X1 = np.asarray(check_inputs(X1, "X1", in_size=network.in_size), dtype=np.float64)
    X2 = None if X2 is None else np.asarray(check_inputs(X2, "X2", in_size=network.in_size),
                                            dtype=np.float64)
    inner = _inner_products(X1, X2)
    nngp, ntk = network.infinite_width(inner, lambda S: expect(network.activation, S, quadrature))
    return LimitingKernels(np.asarray(nngp, dtype=np.float64), np.asarray(ntk, dtype=np.float64))

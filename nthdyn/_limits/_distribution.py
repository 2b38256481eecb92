"""The distribution of the infinite-width network after training (Jacot et al., Section 5).

In the infinite-width limit `f(., 0)` is a centred Gaussian process with the NNGP
covariance and training is kernel regression with the limiting NTK (Huang & Yau
eq. (8)), so `f(., t)` is Gaussian at every time.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from .._data import as_training_set_for, check_inputs
from .._network import AbstractLayeredNetwork
from ._quadrature import AbstractQuadrature
from ._recursion import limiting_kernels


def relative_phi(x):
    """`(1 - exp(-x)) / x`, equal to 1 at 0, accurate for small `x`."""
    small = np.abs(x) < 1e-8
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x / 2, -np.expm1(-safe) / safe)


def eigen_kernel(K: Any, name: str = "kernel") -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0) and eigenvectors of a symmetric PSD kernel matrix;
    an error if it is not (numerically) symmetric and PSD."""
    K = np.asarray(K, dtype=np.float64)
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name}: the kernel matrix on the training inputs has non-finite entries.")
    scale = max(float(np.max(np.abs(K))), np.finfo(float).tiny)
    asymmetry = float(np.max(np.abs(K - K.T))) / scale
    if asymmetry > 1e-8:
        raise ValueError(
            f"{name}: the kernel matrix on the training inputs is not symmetric "
            f"(relative asymmetry {asymmetry:.2g}); a kernel must satisfy K(x, x') = K(x', x)."
        )
    lam, V = np.linalg.eigh(0.5 * (K + K.T))
    if lam[0] < -1e-8 * max(lam[-1], 0.0) - 1e-300:
        raise ValueError(
            f"{name}: the kernel matrix is not positive semi-definite (smallest eigenvalue "
            f"{lam[0]:.3g}, largest {lam[-1]:.3g}); kernel regression would diverge along "
            "that direction. Check the kernel function."
        )
    return np.maximum(lam, 0.0), V



class GaussianPrediction(NamedTuple):
    """Mean `(k,)` and covariance `(k, k)` of the outputs at `k` inputs."""

    mean: np.ndarray
    covariance: np.ndarray

    def percentile(self, q: float) -> np.ndarray:
        """The `q`-th percentile (`0 < q < 100`) of each output."""
        from scipy.stats import norm

        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 < q < 100:
            raise ValueError(f"q={q!r}: pass a percentile strictly between 0 and 100, "
                             "e.g. percentile(2.5) and percentile(97.5) for a 95% band.")
        return self.mean + norm.ppf(q / 100) * np.sqrt(np.maximum(np.diag(self.covariance), 0))


def limiting_distribution(
    network: AbstractLayeredNetwork,
    data: Any,
    X: Any,
    t: float = math.inf,
    *,
    quadrature: AbstractQuadrature | None = None,
    rcond: float = 1e-12,
) -> GaussianPrediction:
    """The distribution of the infinite-width network's outputs at `X` after
    training for time `t` (Jacot et al., Section 5).

    `f_t(x) = f_0(x) - Theta(x, X) A_t (f_0(X) - y)` with `A_t = Theta^-1 (I - e^(-Theta t/n))`
    and `f_0` the centred Gaussian process with the NNGP covariance `Sigma`, so

        mean = Theta(x, X) A_t y
        cov  = Sigma(x, x') - Theta(x, X) A_t Sigma(X, x') - Sigma(x, X) A_t Theta(X, x')
               + Theta(x, X) A_t Sigma(X, X) A_t Theta(X, x').

    At `t = inf`, `A = Theta^-1` (eigenvalues below `rcond` times the largest are
    dropped, as a pseudo-inverse): the kernel interpolant plus a Gaussian that
    vanishes on the training inputs.
    """
    if not isinstance(network, AbstractLayeredNetwork):
        raise TypeError(
            f"network={type(network).__name__}: the infinite-width recursions are known for "
            "nthdyn.MLP (Huang-Yau) and nthdyn.JacotMLP; pass one of those (any width)."
        )
    data = as_training_set_for(data, network.in_size)
    if isinstance(rcond, bool) or not isinstance(rcond, numbers.Real) or not 0 <= rcond < 1:
        raise ValueError(f"rcond={rcond!r}: pass a relative cutoff in [0, 1) for the "
                         "eigenvalues of the NTK, e.g. rcond=1e-12 (the default).")
    t = float(t)
    if not t >= 0:
        raise ValueError(f"t={t!r}: the training time must be >= 0 (math.inf for convergence).")
    Xt = np.asarray(data.X)
    X = np.asarray(check_inputs(X, "X", in_size=data.d))
    both = np.concatenate([Xt, X])
    nngp, theta = limiting_kernels(network, both, quadrature=quadrature)
    n = data.n
    lam, V = eigen_kernel(theta[:n, :n], "limiting NTK")
    if math.isinf(t):
        keep = lam > rcond * lam[-1]
        phi = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
    else:
        phi = (t / n) * relative_phi(lam * t / n)
    A = (V * phi) @ V.T
    B = theta[n:, :n] @ A  # Theta(x, X) A_t
    mean = B @ np.asarray(data.y)
    cross = B @ nngp[:n, n:]
    covariance = nngp[n:, n:] - cross - cross.T + B @ nngp[:n, :n] @ B.T
    return GaussianPrediction(mean, 0.5 * (covariance + covariance.T))

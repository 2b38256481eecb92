"""Kernel regression dynamics, Huang & Yau eq. (8): training with a constant kernel.

    d f(x, t)/dt = -1/n sum_b K(x, x_b) (f(x_b, t) - y_b),

the network's dynamics in the infinite-width limit when `K` is the limiting NTK,
and the hierarchy truncated at `p = 2` (eq. (15)) when `K` is the finite-width NTK
at `t = 0`. With `K = V diag(lambda) V^T` on the training inputs the solution is,
for `tau = t - t0` and `r0 = f(t0) - y`,

    f(t)      = y + V exp(-lambda tau / n) V^T r0                           (training)
    f_x(t)    = f_x(t0) - K(x, X) V diag(phi) V^T r0,  phi = (1 - e^(-lambda tau/n)) / lambda
                                                                              (test, eq. (22))

with `phi -> tau / n` as `lambda -> 0`: a singular `K` needs no inverse. The same
problem also solves as an ODE with any diffrax solver (a check of the closed form).

In the infinite-width limit `f(., 0)` is a centred Gaussian process with the NNGP
covariance, so `f(., t)` is Gaussian at every time (Jacot et al., Section 5):
`limiting_distribution` gives its mean and covariance.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import positive_float, positive_int
from ._data import TrainingSet, as_training_set, check_inputs
from ._kernels import ntk
from ._limits import AbstractQuadrature, limiting_kernels
from ._network import AbstractNetwork, JacotMLP, MLP
from ._problems import _check_tspan
from ._solution import RETCODES, Solution, SolverError
from ._solve import save_times, solve

# ------------------------------------------------------------------------ kernels


class AbstractKernel(eqx.Module):
    """A kernel `K(x, x')` for kernel regression, with the outputs `f(., t0)` it
    starts from by default."""

    @abc.abstractmethod
    def __call__(self, X1: Float[Array, "n1 d"], X2: Float[Array, "n2 d"] | None = None):
        """The `(n1, n2)` kernel matrix (`X2 = None`: `X1` again)."""

    def initial_outputs(self, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """Default outputs at the start: zero (the mean of the infinite-width network)."""
        return jnp.zeros(X.shape[0], dtype=jnp.result_type(float))

    def config(self) -> dict[str, Any]:
        return {"kernel": type(self).__name__}


class FiniteNTK(AbstractKernel):
    """The NTK `K2` of `network` at its current parameters (eq. (7)), held fixed:
    kernel regression with it is the hierarchy truncated at `p = 2`. Starts from the
    network's outputs."""

    network: AbstractNetwork

    def __call__(self, X1, X2=None):
        return ntk(self.network, X1, X2)

    def initial_outputs(self, X):
        return self.network(X)

    def config(self):
        return {"kernel": "FiniteNTK", "network": self.network.config()}


class LimitingNTK(AbstractKernel):
    """The infinite-width NTK of `network`'s architecture (`limiting_kernels`):
    kernel regression with it is the infinite-width training dynamics (eq. (8)).
    Starts from zero outputs, the mean of the infinite-width network."""

    network: MLP | JacotMLP
    quadrature: AbstractQuadrature | None = None

    def __check_init__(self):
        if not isinstance(self.network, (MLP, JacotMLP)):
            raise TypeError(
                f"LimitingNTK(network={type(self.network).__name__}): the limit is known for "
                "nthdyn.MLP and nthdyn.JacotMLP."
            )

    def __call__(self, X1, X2=None):
        return jnp.asarray(limiting_kernels(self.network, X1, X2, quadrature=self.quadrature).ntk)

    def config(self):
        hyper = self.network.hyperparameters()
        hyper["activation"] = self.network.activation.name
        hyper.pop("width", None)
        return {"kernel": "LimitingNTK", "network": type(self.network).__name__, **hyper}


class FunctionKernel(AbstractKernel):
    """Any function `fn(X1, X2) -> (n1, n2)` as a kernel (e.g. an RBF kernel)."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, X1, X2=None):
        return jnp.asarray(self.fn(X1, X1 if X2 is None else X2))

    def config(self):
        return {"kernel": getattr(self.fn, "__name__", repr(self.fn))}


def _as_kernel(kernel: Any) -> AbstractKernel:
    if isinstance(kernel, AbstractKernel):
        return kernel
    if isinstance(kernel, AbstractNetwork):
        raise TypeError(
            f"kernel={type(kernel).__name__}: say which kernel of the network to use, "
            "nthdyn.FiniteNTK(network) (the NTK at its parameters, p = 2) or "
            "nthdyn.LimitingNTK(network) (infinite width)."
        )
    if callable(kernel):
        return FunctionKernel(kernel)
    raise TypeError(
        f"kernel={kernel!r}: pass nthdyn.LimitingNTK(net), nthdyn.FiniteNTK(net) or a "
        "function kernel(X1, X2) -> (n1, n2) matrix."
    )


# ------------------------------------------------------------------------ problem


def _outputs(value: Any, name: str, size: int, hint: str) -> Array:
    array = jnp.asarray(value, dtype=jnp.result_type(float))
    if array.shape != (size,):
        raise ValueError(f"{name} has shape {array.shape}: pass one output per {hint}, shape ({size},).")
    if not bool(jnp.all(jnp.isfinite(array))):
        raise ValueError(f"{name} has a non-finite value.")
    return array


class KernelRegressionProblem(eqx.Module):
    """Training with a constant kernel, eq. (8): `df/dt = -1/n K (f - y)`.

    **Arguments:**

    - `kernel`: `LimitingNTK(net)` (infinite width), `FiniteNTK(net)` (the NTK at
      the network's parameters: the `p = 2` hierarchy) or a function `(X1, X2) -> K`.
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `tspan`: `(t0, t1)`.
    - `test`: optional test inputs `(t, d)`; their outputs follow eq. (22) with `p = 2`.
    - `f0`, `f0_test`: the outputs at `t0` on the training and test inputs; by
      default `kernel.initial_outputs` (zero for the limit, the network's outputs
      for `FiniteNTK`).
    """

    kernel: AbstractKernel
    data: TrainingSet
    tspan: tuple[float, float] = eqx.field(static=True)
    test: Float[Array, "t d"] | None
    f0: Float[Array, " n"]
    f0_test: Float[Array, " t"] | None

    def __init__(self, kernel, data, tspan, test=None, *, f0=None, f0_test=None):
        self.kernel = _as_kernel(kernel)
        self.data = as_training_set(data)
        self.tspan = _check_tspan(tspan)
        self.test = None if test is None else check_inputs(test, "test", in_size=data.d)
        self.f0 = _outputs(self.kernel.initial_outputs(data.X) if f0 is None else f0,
                           "f0", data.n, "training input")
        if self.test is None:
            if f0_test is not None:
                raise ValueError("f0_test was given but test is None: pass the test inputs too.")
            self.f0_test = None
        else:
            n_test = self.test.shape[0]
            self.f0_test = _outputs(self.kernel.initial_outputs(self.test) if f0_test is None
                                    else f0_test, "f0_test", n_test, "test input")

    def config(self) -> dict[str, Any]:
        return {
            "problem": "KernelRegressionProblem",
            "tspan": self.tspan,
            "kernel": self.kernel.config(),
            "n": self.data.n,
            "d": self.data.d,
            "n_test": 0 if self.test is None else int(self.test.shape[0]),
        }


class Eigendecomposition(eqx.Module):
    """Solve kernel regression exactly through the eigendecomposition of `K`
    (the default solver of `KernelRegressionProblem`)."""


# ------------------------------------------------------------------- closed form


def _relative_phi(x):
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


def _closed_form(problem, K, K_test, ts):
    n = problem.data.n
    lam, V = eigen_kernel(K)
    y = np.asarray(problem.data.y)
    coefficients = V.T @ (np.asarray(problem.f0) - y)  # r0 in the eigenbasis
    tau = np.asarray(ts) - problem.tspan[0]
    decay = np.exp(-np.outer(tau, lam) / n)  # (time, n)
    r = (decay * coefficients) @ V.T
    f = y + r
    dfdt = -(r @ K.T) / n
    f_test = dfdt_test = None
    if K_test is not None:
        phi = (tau[:, None] / n) * _relative_phi(np.outer(tau, lam) / n)  # (1 - e^(-lam tau/n)) / lam
        f_test = np.asarray(problem.f0_test) - ((phi * coefficients) @ V.T) @ K_test.T
        dfdt_test = -(r @ K_test.T) / n
    return f, dfdt, f_test, dfdt_test


@eqx.filter_jit
def _integrate(K, K_test, y, f0, f0_test, n, t0, t1, ts, solver, controller, max_steps):
    def field(t, state, args):  # eq. (8), and (22) with p = 2 for the test points
        f, _ = state
        r = f - y
        return -(K @ r) / n, (None if K_test is None else -(K_test @ r) / n)

    def observe(t, state, args):
        velocity = field(t, state, args)
        return state, velocity

    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), solver, t0, t1, None, (f0, f0_test),
        saveat=diffrax.SaveAt(ts=ts, fn=observe), stepsize_controller=controller,
        max_steps=max_steps, throw=False,
    )


@solve.register
def _solve_kernel_regression(
    problem: KernelRegressionProblem,
    solver: Any = None,
    *,
    saveat: Any = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    save_ntk: bool = False,
    throw: bool = True,
) -> Solution:
    """Solve kernel regression (eq. (8)).

    **Arguments:**

    - `solver`: `None` or `Eigendecomposition()` for the exact solution through the
      eigendecomposition of `K`; a diffrax solver (`Tsit5()`, `Kvaerno5()`, ...) to
      integrate the ODE instead.
    - `saveat`: save times in `tspan` (101 evenly spaced by default).
    - `rtol`, `atol`, `max_steps`: for a diffrax solver.
    - `save_ntk`: also store the (constant) kernel on the training set at each time.
    - `throw`: raise `SolverError` when a diffrax solve fails.

    **Returns:** a `Solution` (`network` is `None`).
    """
    t0, t1 = problem.tspan
    ts = save_times(saveat, t0, t1)
    X = problem.data.X
    K = np.asarray(problem.kernel(X), dtype=np.float64)
    if K.shape != (problem.data.n,) * 2:
        raise ValueError(f"kernel returned shape {K.shape} on the training inputs; expected "
                         f"({problem.data.n}, {problem.data.n}).")
    K_test = None
    if problem.test is not None:
        K_test = np.asarray(problem.kernel(problem.test, X), dtype=np.float64)
    n = problem.data.n
    if solver is None or isinstance(solver, Eigendecomposition):
        f, dfdt, f_test, dfdt_test = _closed_form(problem, K, K_test, ts)
        code, stats, name, options = 0, {"num_steps": 0}, "Eigendecomposition", {}
    elif isinstance(solver, diffrax.AbstractAdaptiveSolver):
        rtol, atol = positive_float(rtol, "rtol"), positive_float(atol, "atol")
        max_steps = positive_int(max_steps, "max_steps")
        controller = diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=rtol, atol=atol), step_ts=ts)
        sol = _integrate(jnp.asarray(K), None if K_test is None else jnp.asarray(K_test),
                         problem.data.y, problem.f0, problem.f0_test, n, jnp.asarray(t0),
                         jnp.asarray(t1), ts, solver, controller, max_steps)
        (f, f_test), (dfdt, dfdt_test) = sol.ys
        code = 0 if sol.result == diffrax.RESULTS.successful else (
            1 if sol.result == diffrax.RESULTS.max_steps_reached else 3)
        if code == 0 and not bool(jnp.all(jnp.isfinite(f))):
            code = 2
        if throw and code:
            raise SolverError(
                f"{RETCODES[code]}: the kernel-regression ODE did not reach t={t1} "
                f"({sol.result}). Raise max_steps (now {max_steps}) or use solver=None "
                "for the closed form.")
        stats = {k: int(sol.stats[k]) for k in ("num_steps", "num_accepted_steps",
                                                 "num_rejected_steps")}
        name, options = type(solver).__name__, dict(rtol=rtol, atol=atol, max_steps=max_steps)
    else:
        raise TypeError(
            f"solver={solver!r}: pass None or nthdyn.Eigendecomposition() for the closed form, "
            "or an adaptive diffrax solver such as nthdyn.Tsit5()."
        )
    f = jnp.asarray(f)
    r = f - problem.data.y
    ntk_saved = jnp.broadcast_to(jnp.asarray(K), (len(ts), n, n)) if save_ntk else None
    return Solution(
        problem=problem, t=jnp.asarray(ts), f=f, dfdt=jnp.asarray(dfdt),
        loss=0.5 * jnp.mean(r**2, axis=1), ntk=ntk_saved,
        f_test=None if f_test is None else jnp.asarray(f_test),
        dfdt_test=None if dfdt_test is None else jnp.asarray(dfdt_test),
        network=None, retcode=code, stats=stats, solver=name,
        options={**options, "save_ntk": int(bool(save_ntk))},
    )


# ------------------------------------------------------ infinite-width distribution


class GaussianPrediction(NamedTuple):
    """Mean `(k,)` and covariance `(k, k)` of the outputs at `k` inputs."""

    mean: np.ndarray
    covariance: np.ndarray

    def percentile(self, q: float) -> np.ndarray:
        """The `q`-th percentile (`0 < q < 100`) of each output."""
        from scipy.stats import norm

        return self.mean + norm.ppf(q / 100) * np.sqrt(np.maximum(np.diag(self.covariance), 0))


def limiting_distribution(
    network: MLP | JacotMLP,
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
    data = as_training_set(data)
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
        phi = (t / n) * _relative_phi(lam * t / n)
    A = (V * phi) @ V.T
    B = theta[n:, :n] @ A  # Theta(x, X) A_t
    mean = B @ np.asarray(data.y)
    cross = B @ nngp[:n, n:]
    covariance = nngp[n:, n:] - cross - cross.T + B @ nngp[:n, :n] @ B.T
    return GaussianPrediction(mean, 0.5 * (covariance + covariance.T))

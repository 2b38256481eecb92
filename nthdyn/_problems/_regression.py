"""Kernel regression dynamics, Huang & Yau eq. (8): training with a constant kernel.

    d f(x, t)/dt = -1/n sum_b K(x, x_b) (f(x_b, t) - y_b),

the network's dynamics in the infinite-width limit when `K` is the limiting NTK,
and the hierarchy truncated at `p = 2` (eq. (15)) when `K` is the finite-width NTK
at `t = 0` (`NTHProblem` solves order 2 by this closed form). With
`K = V diag(lambda) V^T` on the training inputs the solution is, for `tau = t - t0`
and `r0 = f(t0) - y`,

    f(t)      = y + V exp(-lambda tau / n) V^T r0                           (training)
              = f(t0) + V (exp(-lambda tau / n) - 1) V^T r0     (computed so, by expm1)
    f_x(t)    = f_x(t0) - K(x, X) V diag(phi) V^T r0,  phi = (1 - e^(-lambda tau/n)) / lambda
                                                                              (test, eq. (22))

with `phi -> tau / n` as `lambda -> 0`: a singular `K` needs no inverse. The same
problem also solves as an ODE with any diffrax solver (a check of the closed form).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._data import TrainingSet, as_training_set, as_training_set_for, check_inputs
from .._kernels import ntk_traced
from .._lazy import diffrax
from .._limits import AbstractQuadrature, limiting_kernels
from .._limits._distribution import eigen_kernel
from .._network import AbstractLayeredNetwork, AbstractNetwork
from .._solve import AbstractClosedForm, AbstractODE, check_span, half_mean_square, is_traced, observed
from ._base import AbstractProblem
from ._flow import check_solver

# ------------------------------------------------------------------------ kernels


class AbstractKernel(eqx.Module):
    """A kernel `K(x, x')` for kernel regression, with the outputs `f(., t0)` it
    starts from by default. `network` is the network it describes (`None` for a
    kernel function): seeds and widths of an ensemble change it."""

    network: eqx.AbstractVar[AbstractNetwork | None]

    @abc.abstractmethod
    def __call__(self, X1: Float[Array, "n1 d"], X2: Float[Array, "n2 d"] | None = None):
        """The `(n1, n2)` kernel matrix (`X2 = None`: `X1` again). Traceable."""

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

    def __check_init__(self):
        if not isinstance(self.network, AbstractNetwork):
            raise TypeError(
                f"FiniteNTK(network={type(self.network).__name__}): pass an nthdyn network "
                "such as nthdyn.MLP(in_size=3, width=8, key=0)."
            )

    def __call__(self, X1, X2=None):
        return ntk_traced(self.network, X1, X2)

    def initial_outputs(self, X):
        return self.network(X)

    def config(self):
        return {"kernel": "FiniteNTK", "network": self.network.config()}


class LimitingNTK(AbstractKernel):
    """The infinite-width NTK of `network`'s architecture (`limiting_kernels`):
    kernel regression with it is the infinite-width training dynamics (eq. (8)).
    Starts from zero outputs, the mean of the infinite-width network. Computed on
    the host (NumPy quadrature) through `jax.pure_callback`, so it also runs
    inside `jit`."""

    network: AbstractLayeredNetwork
    quadrature: AbstractQuadrature | None = None

    def __check_init__(self):
        if not isinstance(self.network, AbstractLayeredNetwork):
            raise TypeError(
                f"LimitingNTK(network={type(self.network).__name__}): the limit is known for "
                "layered networks such as nthdyn.MLP and nthdyn.JacotMLP."
            )

    def __call__(self, X1, X2=None):
        X2 = X1 if X2 is None else X2
        shape = jax.ShapeDtypeStruct((X1.shape[0], X2.shape[0]), jnp.float64)

        def host(a, b):
            return np.asarray(limiting_kernels(self.network, np.asarray(a), np.asarray(b),
                                               quadrature=self.quadrature).ntk)

        return jax.pure_callback(host, shape, X1, X2, vmap_method="sequential")

    def config(self):
        hyper = self.network.hyperparameters()
        hyper["activation"] = self.network.activation.name
        hyper.pop("width", None)
        return {"kernel": "LimitingNTK", "network": type(self.network).__name__, **hyper}


class FunctionKernel(AbstractKernel):
    """Any function `fn(X1, X2) -> (n1, n2)` as a kernel (e.g. an RBF kernel)."""

    fn: Callable = eqx.field(static=True)

    def __init__(self, fn: Callable):
        self.fn = fn

    @property
    def network(self) -> None:
        return None

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


def _outputs(value: Any, name: str, size: int, hint: str) -> Array | None:
    if value is None:
        return None
    array = jnp.asarray(value, dtype=jnp.result_type(float))
    if array.shape != (size,):
        raise ValueError(f"{name} has shape {array.shape}: pass one output per {hint}, shape ({size},).")
    if not is_traced(array) and not bool(jnp.all(jnp.isfinite(array))):
        index = int(jnp.argmin(jnp.isfinite(array)))
        raise ValueError(f"{name} has a non-finite value ({float(array[index])}) at index "
                         f"{index}: pass finite outputs, or {name}=None for the kernel's own.")
    return array


# ------------------------------------------------------------------------ dynamics


class Eigendecomposition(eqx.Module):
    """Solve kernel regression exactly through the eigendecomposition of `K`
    (the default solver of `KernelRegressionProblem`)."""


def _relative_phi(x):
    """`(1 - exp(-x)) / x`, equal to 1 at 0, accurate for small `x`."""
    small = jnp.abs(x) < 1e-8
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 - x / 2, -jnp.expm1(-safe) / safe)


class KernelClosedForm(AbstractClosedForm):
    """The closed form of the module docstring."""

    K: Array
    K_test: Array | None
    y: Array
    f0: Array
    f0_test: Array | None
    t0: float = eqx.field(static=True)
    save_ntk: bool = eqx.field(static=True)
    info: tuple[tuple[str, int], ...] = eqx.field(static=True, default=())

    @property
    def method(self):
        return "Eigendecomposition"

    def record(self):
        return dict(self.info)

    def evaluate(self, ts):
        n = self.y.shape[0]
        lam, V = jnp.linalg.eigh(0.5 * (self.K + self.K.T))
        lam = jnp.maximum(lam, 0.0)
        coefficients = V.T @ (self.f0 - self.y)  # r0 in the eigenbasis
        tau = ts - self.t0
        # f0 plus the change, exp(-lam tau/n) - 1 by expm1: exactly f0 at t0, and the
        # change to relative precision at small t
        f = self.f0 + (jnp.expm1(-jnp.outer(tau, lam) / n) * coefficients) @ V.T
        r = f - self.y
        f_test = dfdt_test = None
        if self.K_test is not None:
            phi = (tau[:, None] / n) * _relative_phi(jnp.outer(tau, lam) / n)
            f_test = self.f0_test - ((phi * coefficients) @ V.T) @ self.K_test.T
            dfdt_test = -(r @ self.K_test.T) / n
        ntk = jnp.broadcast_to(self.K, (ts.shape[0],) + self.K.shape) if self.save_ntk else None
        return observed(f=f, dfdt=-(r @ self.K.T) / n, loss=half_mean_square(f, self.y), ntk=ntk,
                        f_test=f_test, dfdt_test=dfdt_test)


class KernelFlow(AbstractODE):
    """eq. (8), and (22) with p = 2 for the test points, as an ODE."""

    K: Array
    K_test: Array | None
    y: Array
    solver: diffrax.AbstractSolver
    save_ntk: bool = eqx.field(static=True)

    def field(self, t, state, args):
        f, _ = state
        r = f - self.y
        n = self.y.shape[0]
        return -(self.K @ r) / n, (None if self.K_test is None else -(self.K_test @ r) / n)

    def observe(self, t, state, args):
        (f, f_test), (dfdt, dfdt_test) = state, self.field(t, state, args)
        return observed(f=f, dfdt=dfdt, loss=half_mean_square(f, self.y),
                        ntk=self.K if self.save_ntk else None, f_test=f_test, dfdt_test=dfdt_test)


# ------------------------------------------------------------------------ problem


class KernelRegressionProblem(AbstractProblem):
    """Training with a constant kernel, eq. (8): `df/dt = -1/n K (f - y)`.

    **Arguments:**

    - `kernel`: `LimitingNTK(net)` (infinite width), `FiniteNTK(net)` (the NTK at
      the network's parameters: the `p = 2` hierarchy) or a function `(X1, X2) -> K`.
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `tspan`: `(t0, t1)`.
    - `test`: optional test inputs `(t, d)`; their outputs follow eq. (22) with `p = 2`.
    - `f0`, `f0_test`: the outputs at `t0` on the training and test inputs; by
      default `kernel.initial_outputs` (zero for the limit, the network's outputs
      for `FiniteNTK`), computed when solving (so they follow a re-drawn network).

    **Solve:** `solve(problem, solver=None, save_ntk=False, **options)`: `None` or
    `Eigendecomposition()` for the exact solution, or an adaptive diffrax solver
    (`Tsit5()`, `Kvaerno5()`, ...) to integrate the ODE. `save_ntk=True` stores the
    (constant) kernel at each save time.
    """

    kernel: AbstractKernel
    data: TrainingSet
    tspan: tuple[float, float] = eqx.field(static=True)
    test: Float[Array, "t d"] | None
    f0: Float[Array, " n"] | None
    f0_test: Float[Array, " t"] | None

    solve_options: ClassVar[dict[str, Any]] = {"save_ntk": False}

    def __init__(self, kernel, data, tspan, test=None, *, f0=None, f0_test=None):
        self.kernel = _as_kernel(kernel)
        network = self.kernel.network
        self.data = as_training_set(data) if network is None else as_training_set_for(
            data, network.in_size, "the kernel's network")
        self.tspan = check_span(tspan)
        self.test = None if test is None else check_inputs(test, "test", in_size=self.data.d)
        self.f0 = _outputs(f0, "f0", self.data.n, "training input")
        if self.test is None and f0_test is not None:
            raise ValueError("f0_test was given but test is None: pass the test inputs too.")
        self.f0_test = None if self.test is None else _outputs(
            f0_test, "f0_test", self.test.shape[0], "test input")

    @property
    def network(self):
        return self.kernel.network

    @property
    def span(self):
        return self.tspan

    def initial_outputs(self) -> tuple[Array, Array | None]:
        """`(f0, f0_test)`: as given, or the kernel's `initial_outputs` (traceable)."""
        f0 = self.kernel.initial_outputs(self.data.X) if self.f0 is None else self.f0
        f0_test = None
        if self.test is not None:
            f0_test = self.kernel.initial_outputs(self.test) if self.f0_test is None else self.f0_test
        return f0, f0_test

    def dynamics(self, solver, settings):
        X, n = self.data.X, self.data.n
        K = jnp.asarray(self.kernel(X), dtype=jnp.result_type(float))
        if K.shape != (n, n):
            raise ValueError(f"kernel returned shape {K.shape} on the training inputs; expected "
                             f"({n}, {n}).")
        K_test = None if self.test is None else jnp.asarray(self.kernel(self.test, X))
        save_ntk = bool(settings.extra["save_ntk"])
        f0, f0_test = self.initial_outputs()
        if solver is None or isinstance(solver, Eigendecomposition):
            if not is_traced(K):
                eigen_kernel(K)  # symmetric and PSD, or a clear error
            return KernelClosedForm(K=K, K_test=K_test, y=self.data.y, f0=f0, f0_test=f0_test,
                                    t0=self.tspan[0], save_ntk=save_ntk), None
        if not isinstance(solver, (type, diffrax.AbstractAdaptiveSolver)):
            raise TypeError(
                f"solver={solver!r}: pass None or nthdyn.Eigendecomposition() for the closed "
                "form, or an adaptive diffrax solver such as nthdyn.Tsit5()."
            )
        solver = check_solver(solver, n, limit=10_000, state="kernel-regression ODE",
                              default=diffrax.Tsit5())
        return KernelFlow(K=K, K_test=K_test, y=self.data.y, solver=solver, save_ntk=save_ntk), (f0, f0_test)

    def failure_message(self, status, solution, settings):
        return (f"the kernel-regression ODE did not reach t={settings.t1} ({status}). Raise "
                f"max_steps (now {settings.max_steps}) or use solver=None for the closed form.")

    def labels(self):
        eq = "Huang & Yau eq. (8)"
        return {"f": {"long_name": "output f of kernel regression", "equation": eq},
                "dfdt": {"long_name": "time derivative of f, -1/n K (f - y)", "equation": eq},
                "ntk": {"long_name": f"kernel K(x_a, x_b) of kernel regression "
                                     f"({self.kernel.config()['kernel']}, constant)", "equation": eq}}

    def config(self) -> dict[str, Any]:
        return {
            "problem": "KernelRegressionProblem",
            "tspan": self.tspan,
            "kernel": self.kernel.config(),
            "n": self.data.n,
            "d": self.data.d,
            "n_test": 0 if self.test is None else int(self.test.shape[0]),
        }

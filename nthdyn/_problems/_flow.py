"""Exact training by gradient flow, Huang & Yau eq. (3)-(5).

`d theta/dt = -grad L(theta)`, integrated by diffrax with adaptive steps. Only
observables are saved (outputs, their time derivative, the loss, optionally the
NTK), never the parameter trajectory: a width-4096 network has 10^7 parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._data import TrainingSet
from .._kernels import ntk_traced
from .._network import AbstractNetwork, parameter_count, trainable
from .._solve import AbstractODE, check_span, half_mean_square, observed
from ._base import AbstractProblem, check_common

#: Above this many parameters an implicit solver's dense Jacobian would not fit.
IMPLICIT_MAX_PARAMETERS = 20_000


def network_observables(params, static, X, y, X_test, velocity, save_ntk):
    """Outputs, loss, NTK, and the outputs' derivative along `velocity` (a jvp;
    none when `velocity` is None): the observables of a network's parameters."""

    def outputs(p):
        net = eqx.combine(p, static)
        return net(X), (None if X_test is None else net(X_test))

    if velocity is None:
        (f, f_test), (dfdt, dfdt_test) = outputs(params), (None, None)
    else:
        (f, f_test), (dfdt, dfdt_test) = jax.jvp(outputs, (params,), (velocity,))
    ntk = ntk_traced(eqx.combine(params, static), X) if save_ntk else None
    return observed(f=f, dfdt=dfdt, loss=half_mean_square(f, y), ntk=ntk, f_test=f_test,
                    dfdt_test=dfdt_test)


def loss_gradient(params, static, X, y):
    """`grad L(theta)`, `L = 1/(2n) sum_b (f(x_b) - y_b)^2`."""
    return jax.grad(lambda p: half_mean_square(eqx.combine(p, static)(X), y))(params)


def check_solver(solver: Any, state_size: int, *, limit: int, state: str,
                 default: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """An adaptive diffrax solver instance (`default` for None); an implicit one only
    if the dense Jacobian of a state of `state_size` entries is affordable."""
    if solver is None:
        return default
    if isinstance(solver, type):
        raise TypeError(f"solver={solver.__name__}: pass an instance, e.g. {solver.__name__}().")
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise TypeError(
            f"solver={solver!r}: pass an adaptive diffrax solver such as nthdyn.Tsit5(), "
            "nthdyn.Dopri8() or nthdyn.Kvaerno5()."
        )
    if isinstance(solver, diffrax.AbstractImplicitSolver) and state_size > limit:
        raise ValueError(
            f"solver={type(solver).__name__}() is implicit: its Newton step builds a dense "
            f"{state_size} x {state_size} Jacobian of the {state} (at most {limit} entries are "
            "allowed). Use an explicit solver (Tsit5, Dopri8); implicit solvers fit small "
            "stiff systems such as the low orders of the hierarchy."
        )
    return solver


class GradientFlow(AbstractODE):
    """The gradient flow of a network's parameters, eq. (3)-(5)."""

    static: Any
    X: Array
    y: Array
    X_test: Array | None
    solver: diffrax.AbstractSolver
    save_ntk: bool = eqx.field(static=True)

    def field(self, t, params, args):
        return jax.tree_util.tree_map(jnp.negative, loss_gradient(params, self.static, self.X, self.y))

    def observe(self, t, params, args):
        return network_observables(params, self.static, self.X, self.y, self.X_test,
                                   self.field(t, params, args), self.save_ntk)

    def final(self, params):
        return eqx.combine(params, self.static)


class GradientFlowProblem(AbstractProblem):
    """Exact training by gradient flow, Huang & Yau eq. (3)-(5):
    `d theta / dt = -grad L(theta)`, `L = 1/(2n) sum_b (f(x_b) - y_b)^2`.

    **Arguments:**

    - `network`: the network at `t = tspan[0]`.
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `tspan`: `(t0, t1)` with `t0 < t1`.
    - `test`: optional test inputs `(t, d)` whose outputs are tracked too.

    **Solve:** `solve(problem, solver=Tsit5(), save_ntk=False, **options)`; any
    adaptive diffrax solver (`Dopri8()` for tolerances near 1e-13; implicit solvers
    only for up to 20,000 parameters). `save_ntk=True` also saves the NTK on the
    training set at each save time. The default norm, the Euclidean norm over all
    parameters, bounds the error of the outputs whatever the width.
    """

    network: AbstractNetwork
    data: TrainingSet
    tspan: tuple[float, float] = eqx.field(static=True)
    test: Float[Array, "t d"] | None = None

    solve_options: ClassVar[dict[str, Any]] = {"save_ntk": False}

    def __init__(self, network, data, tspan, *, test=None):
        self.network, self.data, self.test = check_common(network, data, test)
        self.tspan = check_span(tspan)

    @property
    def span(self):
        return self.tspan

    def dynamics(self, solver, settings):
        solver = check_solver(solver, parameter_count(self.network), limit=IMPLICIT_MAX_PARAMETERS,
                              state="parameter-space flow", default=diffrax.Tsit5())
        params, static = trainable(self.network)
        return GradientFlow(static=static, X=self.data.X, y=self.data.y, X_test=self.test,
                            solver=solver, save_ntk=bool(settings.extra["save_ntk"])), params

    def title(self):
        return "nthdyn GradientFlowProblem solution"

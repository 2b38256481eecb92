"""Discrete gradient descent, `theta_{k+1} = theta_k - eta grad L(theta_k)`
(Huang & Yau Section 4 item 2, eq. (29); Jacot et al. Section 6).

Two methods evolve the same iteration:

- `GradientDescent()` (the default): dense updates of every parameter.
- `LowRankGradientDescent()`: for very wide layered networks. A step changes the
  matrix of linear map `k` by `n` outer products (one per training input,
  `grad_{P_k} f = g_k (x) u_k`):

      P_k <- P_k - eta/n sum_b r_b g_k(x_b) (x) u_k(x_b),

  so after `s` steps `P_k = P_k(0) + A_k B_k^T` with `n s` columns. For a
  width-10^4 hidden matrix and `n s` of a few thousand, keeping the factors costs a
  fraction of the dense update: each step reads `P_k(0)` twice and never writes it.
  The network says which of its matrices can be factored (`factorable`) and how an
  outer product enters each map (`add_outer`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import positive_float, positive_int
from .._data import TrainingSet
from .._kernels import ntk_structured
from .._network import AbstractLayeredNetwork, AbstractNetwork, LowRankMatrix, densify, trainable
from .._solve import AbstractMap, half_mean_square, observed, solve
from .._spectrum import lanczos_max, ntk_lambda_max_traced, start_vector
from ._base import AbstractProblem, check_common
from ._flow import loss_gradient, network_observables
from ._objective import Objective, check_weight_decay


class GradientDescent(eqx.Module):
    """Dense gradient descent (the default method of `GradientDescentProblem`)."""


class LowRankGradientDescent(eqx.Module):
    """Gradient descent of a layered network with the updates of its large matrices
    kept as low-rank factors (see the module docstring). The same iteration as
    `GradientDescent()` to rounding; much faster when `width >> n * steps`.

    **Arguments:**

    - `low_rank`: `True` for every trained factorable matrix, `False` for none;
      `None` (default) where `n * steps` is at most a quarter of its smaller side.
    - `dense_network`: return the final network with dense matrices (`True`), or
      keep its updated matrices as `LowRankMatrix` factors (`False`), which the
      network's forward pass and `ntk_structured` accept: this skips the
      `O(m^2 n steps)` products that form the dense matrices.
    """

    low_rank: bool | None = eqx.field(static=True, default=None)
    dense_network: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.low_rank not in (None, True, False):
            raise TypeError(f"low_rank={self.low_rank!r}: pass True (factor every trained "
                            "matrix), False (none) or None (automatic, by size).")
        if self.dense_network not in (True, False):
            raise TypeError(f"dense_network={self.dense_network!r}: pass True (return dense "
                            "matrices) or False (keep LowRankMatrix factors).")


class DenseDescent(AbstractMap):
    """`theta <- theta - eta grad L(theta)` on the dense parameters."""

    static: Any
    X: Array
    y: Array
    X_test: Array | None
    learning_rate: Array
    save_ntk: bool = eqx.field(static=True)
    objective: Objective | None = None
    save_lambda_max: bool = eqx.field(static=True, default=False)

    @property
    def method(self):
        return "GradientDescent"

    def step(self, k, params):
        if self.objective is None:
            g = loss_gradient(params, self.static, self.X, self.y)
        else:  # grad (L + R): weight decay, paper 002 eq. (2)
            g = self.objective.gradient(params, self.static, self.X, self.y)
        return jax.tree_util.tree_map(lambda a, b: a - self.learning_rate * b, params, g)

    def observe(self, params):
        out = network_observables(params, self.static, self.X, self.y, self.X_test, None,
                                  self.save_ntk)
        if self.save_lambda_max:  # Lanczos on J (J^T v), matrix-free (nthdyn._spectrum)
            top = ntk_lambda_max_traced(eqx.combine(params, self.static), self.X)
            out["observables"] = {**out["observables"], "lambda_max": top}
        return out

    def final(self, params):
        return eqx.combine(params, self.static)


class FactoredDescent(AbstractMap):
    """The same step on a layered network whose matrices may be `LowRankMatrix`es."""

    X: Array
    y: Array
    X_test: Array | None
    learning_rate: Array
    save_ntk: bool = eqx.field(static=True)
    dense_network: bool = eqx.field(static=True)
    save_lambda_max: bool = eqx.field(static=True, default=False)

    @property
    def method(self):
        return "LowRankGradientDescent"

    def step(self, k, net):
        n = self.X.shape[0]
        (f, u), g = jax.vmap(lambda x: jax.value_and_grad(
            lambda taps: net.trace(x, taps), has_aux=True)(
                tuple(jnp.zeros((s,), x.dtype) for s in net.tap_sizes())))(self.X)
        coef = -(self.learning_rate / n) * (f - self.y).astype(self.X.dtype)
        for j in net.trained_maps():  # sum_b coef_b g_j(x_b) (x) u_j(x_b)
            net = net.add_outer(j, (g[j] * coef[:, None]).T, u[j].T)
        return net

    def observe(self, net):
        f = jax.vmap(net.apply)(self.X)
        f_test = None if self.X_test is None else jax.vmap(net.apply)(self.X_test)
        ntk = ntk_structured(net, self.X) if self.save_ntk or self.save_lambda_max else None
        extra = {}
        if self.save_lambda_max:  # Lanczos on the structured NTK (the factors are not theta)
            extra["lambda_max"] = lanczos_max(lambda v: ntk @ v, start_vector(
                self.X.shape[0], self.X.dtype), self.X.shape[0])
        return observed(f=f, loss=half_mean_square(f, self.y),
                        ntk=ntk if self.save_ntk else None, f_test=f_test, observables=extra)

    def final(self, net):
        return densify(net) if self.dense_network else net


class GradientDescentProblem(AbstractProblem):
    """Discrete gradient descent `theta_{k+1} = theta_k - eta grad L(theta_k)`
    (Huang & Yau Section 4 item 2; Jacot et al. Section 6). Time is the step count.

    **Arguments:**

    - `network`, `data`, `test`: as for `GradientFlowProblem`.
    - `steps`: the number of steps.
    - `learning_rate`: the step size `eta > 0`. Gradient descent with `eta` tracks
      the gradient flow at time `t = eta * steps` as `eta -> 0`.
    - `weight_decay`: `lambda >= 0` (one number, or one per linear map): the step
      uses `grad (L + R)`, `R = 1/(2m) sum_k lambda_k ||P_k||^2` (paper 002 eq. (2);
      see `GradientFlowProblem`). Dense steps only (`GradientDescent()`).

    **Solve:** `solve(problem, GradientDescent() | LowRankGradientDescent(),
    saveat=steps, save_ntk=False, save_lambda_max=False, progress=..., throw=...)`;
    `save_lambda_max=True` saves `lambda_max(K2)` at each save in
    `sol.observables["lambda_max"]` (Lanczos, `nthdyn._spectrum`); `saveat` lists the
    steps to save (all of `0..steps` by default).
    """

    network: AbstractNetwork
    data: TrainingSet
    steps: int = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    test: Float[Array, "t d"] | None = None
    weight_decay: tuple[float, ...] | float = eqx.field(static=True, default=0.0)

    solve_options: ClassVar[dict[str, Any]] = {"save_ntk": False, "save_lambda_max": False}
    discrete: ClassVar[bool] = True

    def __init__(self, network, data, steps, learning_rate, *, test=None, weight_decay=0.0):
        self.network, self.data, self.test = check_common(network, data, test)
        self.steps = positive_int(steps, "steps")
        self.learning_rate = positive_float(learning_rate, "learning_rate")
        lambdas = check_weight_decay(self.network, weight_decay)
        self.weight_decay = lambdas if isinstance(weight_decay, (list, tuple)) else lambdas[0]

    @property
    def span(self):
        return (0, self.steps)

    def dynamics(self, solver, settings):
        save_ntk = bool(settings.extra["save_ntk"])
        save_lambda_max = settings.extra["save_lambda_max"]
        if save_lambda_max not in (True, False):
            raise TypeError(f"save_lambda_max={save_lambda_max!r}: pass True or False.")
        lr = jnp.asarray(self.learning_rate, self.data.X.dtype)
        decays = any(check_weight_decay(self.network, self.weight_decay))
        objective = Objective.of(self.network, self.weight_decay) if decays else None
        if solver is None or isinstance(solver, GradientDescent):
            params, static = trainable(self.network)
            return DenseDescent(static=static, X=self.data.X, y=self.data.y, X_test=self.test,
                                learning_rate=lr, save_ntk=save_ntk,
                                objective=objective,
                                save_lambda_max=bool(save_lambda_max)), params
        if decays and isinstance(solver, LowRankGradientDescent):
            raise TypeError(
                f"solver=LowRankGradientDescent() with weight_decay={self.weight_decay!r}: weight "
                "decay shrinks every matrix P_k(0) at each step, which the low-rank factors "
                "cannot hold. Use nthdyn.GradientDescent() (the default).")
        if not isinstance(solver, LowRankGradientDescent):
            raise TypeError(
                f"solver={solver!r}: GradientDescentProblem takes nthdyn.GradientDescent() "
                "(default) or nthdyn.LowRankGradientDescent(); use GradientFlowProblem for an "
                "ODE solver."
            )
        network = self.network
        if not isinstance(network, AbstractLayeredNetwork):
            raise TypeError(
                f"problem.network={type(network).__name__}: low-rank updates are implemented for "
                "layered networks (nthdyn.MLP, nthdyn.JacotMLP); use nthdyn.solve(problem) for others."
            )
        capacity = self.data.n * self.steps
        for k in network.trained_maps():
            where = network.factorable(k)
            if where is None:
                continue
            w = where(network)
            if solver.low_rank if solver.low_rank is not None else 4 * capacity <= min(w.shape):
                network = eqx.tree_at(where, network, LowRankMatrix.empty(w, capacity))
        return FactoredDescent(X=self.data.X, y=self.data.y, X_test=self.test, learning_rate=lr,
                               save_ntk=save_ntk, dense_network=solver.dense_network,
                               save_lambda_max=bool(save_lambda_max)), network

    def failure_message(self, status, solution, settings):
        if status == "nonfinite":
            return (f"gradient descent diverged (the outputs became non-finite) with "
                    f"learning_rate={self.learning_rate}: lower the learning rate.")
        return super().failure_message(status, solution, settings)

    def labels(self):
        return {"f": {"long_name": "network output on the training inputs f(x_a) after "
                                   "each gradient-descent step"}}


def low_rank_descent(problem: GradientDescentProblem, *, low_rank: bool | None = None,
                     dense_network: bool = True, **options: Any):
    """`solve(problem, LowRankGradientDescent(low_rank, dense_network), **options)`."""
    if not isinstance(problem, GradientDescentProblem):
        raise TypeError(f"problem={type(problem).__name__}: pass a GradientDescentProblem.")
    return solve(problem, LowRankGradientDescent(low_rank, dense_network), **options)

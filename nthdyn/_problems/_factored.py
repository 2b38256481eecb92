"""The exact gradient flow with factored Runge-Kutta stages (layered networks).

An explicit Runge-Kutta step of `d theta/dt = v(theta) = -c grad L(theta)` (eq. (3)-(5);
`c_k` a time scale per map, `c = 1` for Huang & Yau),

    k_i = v(theta_0 + h sum_{j<i} a_ij k_j),    theta_1 = theta_0 + h sum_i b_i k_i,
    error = h sum_i e_i k_i                     (e = b - b_embedded, diffrax's `b_error`),

spends most of its time, for a wide network, on arithmetic with parameter-sized
vectors: a Dopri8 step forms 12 stage states `theta_0 + h sum a_ij k_j` and about 135
passes over all `P` parameters. But each stage is of rank at most `n` per linear map:
with `L = 1/(2n) sum_b r_b^2` and `grad_{P_k} f(x_b) = g_k(x_b) (x) u_k(x_b)` (the
output sensitivity and the input of map `k`, see `AbstractLayeredNetwork`),

    k_i[P_k] = -(c_k/n) sum_b r_b(stage i) g_k(x_b) (x) u_k(x_b) = G_ik U_ik^T,

with `n` columns in `G_ik` (`out_k x n`) and `U_ik` (`in_k x n`). So a stage state is
`P_k(0) + sum_j h a_ij G_jk U_jk^T`, a `LowRankMatrix` whose forward and backward
passes cost `O(in_k out_k + s n (in_k + out_k))` per input, and the only dense work of a
step is forming `theta_1` and the error estimate, once each (one `out_k x s n` by
`s n x in_k` product per map). The step controller (`diffrax.PIDController`, the same
tolerances and norm as the dense path) then reads `theta_0`, `theta_1` and the error
once. Same tableau, same controller: the same steps and the same accuracy (tested
against the dense path).

Maps the network cannot factor (the readout vector of an MLP) take the same updates
densely (`add_outer`); they are `O(m)`. Frozen maps do not move.
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._network import AbstractLayeredNetwork, low_rank, low_rank_pays, trainable


class FactoredStages(diffrax.AbstractTerm):
    """The vector field of a gradient flow, evaluated stage by stage in factored form
    by `FactoredRungeKutta`; as a plain term (`vf`) it is the dense field, which diffrax
    uses to choose the first step."""

    flow: Any  # the GradientFlow dynamics: `field`, `static`, `X`, `labels()`, `speeds()`

    def vf(self, t, y, args):
        return self.flow.field(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return jax.tree_util.tree_map(lambda v: control * v, vf)

    def factors(self, network: AbstractLayeredNetwork) -> tuple[list, list]:
        """`(G_k, U_k)` for every trained map `k`: the field at `network` is
        `G_k U_k^T` on map `k` (module docstring). Cost: one forward and one backward
        pass of the `n` training inputs through `network`."""
        X = self.flow.X
        zeros = tuple(jnp.zeros((size,), X.dtype) for size in network.tap_sizes())
        (f, inputs), sensitivities = jax.vmap(lambda x: jax.value_and_grad(
            lambda taps: network.trace(x, taps), has_aux=True)(zeros))(X)
        coef = -(f - self.flow.labels()) / X.shape[0]
        maps, speeds = network.trained_maps(), self.flow.speeds(network)
        return ([(speed * sensitivities[k] * coef[:, None]).T for k, speed in zip(maps, speeds)],
                [inputs[k].T for k in maps])


def _combine(network: AbstractLayeredNetwork, weights: Any, G: list, U: list) -> Any:
    """`network` with `sum_j weights_j G_jk U_jk^T` added to every trained map `k`;
    `G[k]` is `(s, out_k, n)`, `U[k]` is `(s, in_k, n)`."""
    for index, k in enumerate(network.trained_maps()):
        s, _, n = G[index].shape
        left = jnp.moveaxis(weights[:, None, None] * G[index], 0, 1).reshape(-1, s * n)
        right = jnp.moveaxis(U[index], 0, 1).reshape(-1, s * n)
        network = network.add_outer(k, left, right)
    return network


class FactoredRungeKutta(diffrax.AbstractAdaptiveSolver):
    """An explicit Runge-Kutta method of diffrax (its Butcher tableau, order and error
    estimate) whose stages are kept as low-rank factors (module docstring). Used by
    `GradientFlowProblem` for layered networks (`solve(..., factored=...)`)."""

    method: diffrax.AbstractRungeKutta

    term_structure: ClassVar = FactoredStages
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return self.method.order(terms)

    def init(self, terms, t0, t1, y0, args):
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        tableau = self.method.tableau
        s = tableau.num_stages
        a = np.zeros((s, s))
        for i, row in enumerate(tableau.a_lower, start=1):
            a[i, :i] = row
        h = t1 - t0
        terms = terms if isinstance(terms, FactoredStages) else terms.term  # diffrax's WrapTerm
        flow = terms.flow
        dense = eqx.combine(y0, flow.static)
        start = low_rank(dense, s * flow.X.shape[0])
        shapes = [(np.shape(g), np.shape(u)) for g, u in zip(*jax.eval_shape(terms.factors, dense))]
        G0 = [jnp.zeros((s, *g), _dtype(y0)) for g, _ in shapes]
        U0 = [jnp.zeros((s, *u), _dtype(y0)) for _, u in shapes]

        def stage(carry, inputs):
            G, U = carry
            i, row = inputs
            G_i, U_i = terms.factors(_combine(start, h * row, G, U))
            return ([g.at[i].set(x) for g, x in zip(G, G_i)],
                    [u.at[i].set(x) for u, x in zip(U, U_i)]), None

        dtype = _dtype(y0)
        (G, U), _ = jax.lax.scan(stage, (G0, U0), (jnp.arange(s), jnp.asarray(a, dtype)))

        def weighted(network, coefficients):  # only the stages with a nonzero weight
            used = np.flatnonzero(np.asarray(coefficients))
            weights = h * jnp.asarray(np.asarray(coefficients)[used], dtype)
            return trainable(_combine(network, weights, [g[used] for g in G],
                                      [u[used] for u in U]))[0]

        y1 = weighted(dense, tableau.b_sol)
        zero = eqx.combine(jax.tree_util.tree_map(jnp.zeros_like, y0), flow.static)
        y_error = weighted(zero, tableau.b_error)
        return y1, y_error, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful


def _dtype(y0: Any) -> Any:
    return jax.tree_util.tree_leaves(y0)[0].dtype


def factoring_pays(network: Any, n: int, method: Any) -> bool:
    """The automatic rule: an explicit Runge-Kutta method and a layered network whose
    stages (`s n` columns a step) pay as factors (`low_rank_pays`)."""
    return isinstance(method, diffrax.AbstractERK) and low_rank_pays(
        network, method.tableau.num_stages * n)

"""Gradient descent for very wide layered networks, with low-rank weight updates.

A gradient step changes the matrix of linear map `k` by a sum of `n` outer products
(one per training input, `grad_{P_k} f = g_k (x) u_k`):

    P_k <- P_k - eta/n sum_b r_b g_k(x_b) (x) u_k(x_b).

After `s` steps `P_k = P_k(0) + A_k B_k^T` with `A_k`, `B_k` of `n s` columns. For a
width-10^4 hidden matrix (10^8 entries) and `n s` of a few thousand, keeping the
factors costs a fraction of the dense update: each step then reads `P_k(0)` twice
(forward and backward pass) and never writes it, where the dense step also forms and
writes the full gradient and the updated matrix. The result is the same gradient
descent (to rounding); the final network is returned with dense matrices.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._kernels import ntk_structured
from ._network import JacotMLP, MLP
from ._problems import GradientDescentProblem
from ._solution import Solution, SolverError
from ._solve import check_float64, save_times


class _LowRank(eqx.Module):
    """`W0 + A B^T`, used in place of a weight matrix by a network's `trace`."""

    w0: jax.Array
    a: jax.Array
    b: jax.Array

    @property
    def shape(self):
        return self.w0.shape

    def __matmul__(self, u):
        return self.w0 @ u + self.a @ (self.b.T @ u)

    def dense(self):
        return self.w0 + self.a @ self.b.T


def _weight_path(network, k):
    """`where` for the weight matrix of map `k` (None: the map has no matrix)."""
    if isinstance(network, MLP) and k == network.depth:
        return None
    return lambda net: net.weights[k]


def _update(network, k, g, u, coef, column):
    """Apply `sum_b coef_b g_b (x) u_b` to map `k` (`g`: (n, out), `u`: (n, in))."""
    left = g.T * coef  # (out, n)
    if isinstance(network, MLP) and k == network.depth:
        readout = network.readout
        return eqx.tree_at(lambda net: net.readout, network, readout + (left[0] @ u).astype(readout.dtype))
    if isinstance(network, JacotMLP):  # P_k = [W | b] acting on [alpha / sqrt(n_l), beta]
        bias = network.biases[k]
        network = eqx.tree_at(lambda net: net.biases[k], network,
                              bias + (left @ u[:, -1]).astype(bias.dtype))
        u = u[:, :-1]
    w = network.weights[k]
    if isinstance(w, _LowRank):
        n = u.shape[0]
        a = jax.lax.dynamic_update_slice(w.a, left.astype(w.a.dtype), (0, column * n))
        b = jax.lax.dynamic_update_slice(w.b, u.T.astype(w.b.dtype), (0, column * n))
        return eqx.tree_at(lambda net: net.weights[k], network, _LowRank(w.w0, a, b))
    return eqx.tree_at(lambda net: net.weights[k], network, w + (left @ u).astype(w.dtype))


def _factors(network, X):
    """Outputs, output sensitivities `g_k` and inputs `u_k` for each row of `X`."""
    zeros = tuple(jnp.zeros((size,), X.dtype) for size in network.tap_sizes())

    def one(x):
        (f, inputs), g = jax.value_and_grad(lambda taps: network.trace(x, taps), has_aux=True)(zeros)
        return f, g, inputs

    return jax.vmap(one)(X)


@eqx.filter_jit
def _segment(network, X, y, learning_rate, start, stop):
    n = X.shape[0]

    def step(i, net):
        f, g, u = _factors(net, X)
        coef = -(learning_rate / n) * (f - y).astype(X.dtype)
        for k in net.trained_maps():
            net = _update(net, k, g[k], u[k], coef, i)
        return net

    return jax.lax.fori_loop(start, stop, step, network)


@eqx.filter_jit
def _observe(network, X, y, X_test, save_ntk):
    f = jax.vmap(network.apply)(X)
    observed = dict(f=f, loss=0.5 * jnp.mean((f - y) ** 2),
                    f_test=None if X_test is None else jax.vmap(network.apply)(X_test))
    if save_ntk:
        observed["ntk"] = ntk_structured(network, X)
    return observed


@eqx.filter_jit
def _densify(network):
    return jax.tree_util.tree_map(lambda w: w.dense() if isinstance(w, _LowRank) else w, network,
                                  is_leaf=lambda w: isinstance(w, _LowRank))


def low_rank_descent(
    problem: GradientDescentProblem,
    *,
    saveat: Any = None,
    save_ntk: bool = False,
    low_rank: bool | None = None,
    dense_network: bool = True,
    throw: bool = True,
) -> Solution:
    """Solve a `GradientDescentProblem` of an `MLP` or `JacotMLP`, keeping the updates
    of the large weight matrices as low-rank factors (see the module docstring).

    The same iteration as `solve(problem)`; much faster for very wide networks
    (width >> n * steps). Computes in the dtype of the network's arrays and data
    (float32 networks stay float32).

    **Arguments:**

    - `saveat`: the steps at which to save (all steps `0..steps` by default).
    - `save_ntk`: also save the NTK on the training set at each saved step.
    - `low_rank`: `True` for every trained hidden matrix, `False` for none; `None`
      (default) where `n * steps` is at most a quarter of the matrix's smaller side.
    - `dense_network`: return the final network with dense matrices (`True`), or
      keep its updated matrices as `W0 + A B^T` factor objects (`False`), which the
      network's forward pass and `ntk_structured` accept: this skips the
      `O(m^2 n steps)` products that form the dense matrices.
    - `throw`: raise `SolverError` if the outputs become non-finite.

    **Returns:** a `Solution` whose `network` is the final network.
    """
    check_float64()
    if not isinstance(problem, GradientDescentProblem):
        raise TypeError(f"problem={type(problem).__name__}: pass a GradientDescentProblem.")
    network = problem.network
    if not isinstance(network, (MLP, JacotMLP)):
        raise TypeError(
            f"problem.network={type(network).__name__}: low-rank updates are implemented for "
            "nthdyn.MLP and nthdyn.JacotMLP; use nthdyn.solve(problem) for other networks."
        )
    steps = np.asarray(save_times(saveat, 0, problem.steps, problem.steps + 1))
    if not np.all(steps == np.round(steps)):
        raise ValueError(f"saveat: gradient-descent steps must be integers, got {steps}.")
    steps = steps.astype(int)
    X, y = problem.data.X, problem.data.y
    n = X.shape[0]
    capacity = n * problem.steps
    work = network
    for k in network.trained_maps():
        if _weight_path(network, k) is None:
            continue
        w = network.weights[k]
        use = low_rank if low_rank is not None else 4 * capacity <= min(w.shape)
        if use:
            factors = _LowRank(w, jnp.zeros((w.shape[0], capacity), w.dtype),
                               jnp.zeros((w.shape[1], capacity), w.dtype))
            work = eqx.tree_at(lambda net: net.weights[k], work, factors)
    lr = jnp.asarray(problem.learning_rate, X.dtype)
    records, done = [], 0
    for target in steps:
        if target > done:
            work = _segment(work, X, y, lr, jnp.asarray(done), jnp.asarray(int(target)))
        done = int(target)
        records.append(_observe(work, X, y, problem.test, bool(save_ntk)))
    observed = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *records)
    finite = bool(jnp.all(jnp.isfinite(observed["f"])))
    if throw and not finite:
        raise SolverError(f"nonfinite: gradient descent diverged with learning_rate="
                          f"{problem.learning_rate}: lower the learning rate.")
    return Solution(
        problem=problem, t=jnp.asarray(steps, dtype=jnp.result_type(float)), f=observed["f"],
        dfdt=None, loss=observed["loss"], ntk=observed.get("ntk"), f_test=observed["f_test"],
        dfdt_test=None, network=_densify(work) if dense_network else work, retcode=0 if finite else 2,
        stats={"num_steps": int(problem.steps)}, solver="LowRankGradientDescent",
        options=dict(learning_rate=problem.learning_rate, save_ntk=int(bool(save_ntk)),
                     low_rank=-1 if low_rank is None else int(low_rank)),
    )

"""The stability edge of gradient descent and the phase of a run.

With `L = 1/(2n) sum_b r_b^2` a gradient-descent step is `theta <- theta - (eta/n) J^T r`,
and to first order the residual moves by `r <- (1 - (eta/n) K2) r`. Its component along
the top eigenvector of the NTK `K2 = J J^T` grows unless `eta < 2n / lambda_max(K2)`:
the stability edge `eta_crit = 2n / lambda_0`, `lambda_0 = lambda_max(K2)` at step 0.
Beyond it wide networks do not diverge at once: in the catapult phase (Lewkowycz, Bahri,
Dyer, Sohl-Dickstein & Gur-Ari 2020) the loss grows, `lambda_max(K2)` falls below
`2n / eta`, and training then converges; beyond `eta_max` it diverges.

- `ntk_lambda_max(network, X)`: `lambda_max(K2)` by Lanczos on the matrix-free products
  `v -> J (J^T v)` (one vjp and one jvp of the `n` outputs), with full
  reorthogonalization: `k` iterations cost `k` forward-and-backward passes,
  `O(k n m^2 H)` for an MLP, and memory `O(n m H + P)`; nothing parameter-sized is
  ever decomposed (the tridiagonal matrix is `k x k`). With `k = n` iterations the
  Krylov space is the whole sample space and the result is exact to rounding.
- `lanczos_max(matvec, v0, iterations)`: the same for any symmetric operator.
- `phase_report(solution)` / `classify_phase(...)`: the phase of a gradient-descent run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import positive_float, positive_int
from ._data import check_inputs
from ._kernels import check_network
from ._network import trainable
from ._solve import Solution

#: The phases of a gradient-descent run, in the order of their integer codes.
PHASES = ("lazy", "catapult", "divergent")


def lanczos_max(matvec: Callable[[Array], Array], v0: Float[Array, " n"],
                iterations: int) -> Float[Array, ""]:
    """The largest eigenvalue of the symmetric operator `matvec` (on vectors of the
    shape of `v0`) from `iterations` Lanczos steps started at `v0`, with full
    reorthogonalization (so a breakdown, an invariant subspace found early, leaves
    zero rows that add only eigenvalues 0 to the tridiagonal matrix; for a
    positive semi-definite operator the largest is unaffected). Traceable."""
    n = v0.shape[0]
    k = iterations
    q0 = v0 / jnp.linalg.norm(v0)
    Q = jnp.zeros((k + 1, n), v0.dtype).at[0].set(q0)
    alphas = jnp.zeros((k,), v0.dtype)
    betas = jnp.zeros((k,), v0.dtype)

    def body(j, carry):
        Q, alphas, betas = carry
        q = Q[j]
        w = matvec(q)
        alpha = jnp.dot(q, w)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - Q.T @ (Q @ w)
        beta = jnp.linalg.norm(w)
        scale = jnp.linalg.norm(alpha) + jnp.abs(betas[j - 1]) + jnp.finfo(v0.dtype).tiny
        alive = beta > 1e-12 * scale
        q_next = jnp.where(alive, w / jnp.where(alive, beta, 1.0), 0.0)
        return (Q.at[j + 1].set(q_next), alphas.at[j].set(alpha),
                betas.at[j].set(jnp.where(alive, beta, 0.0)))

    Q, alphas, betas = jax.lax.fori_loop(0, k, body, (Q, alphas, betas))
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    return jnp.linalg.eigvalsh(T)[-1]


def start_vector(n: int, dtype: Any, key: Any = 0) -> Float[Array, " n"]:
    """The Lanczos start vector: normal entries from `key` (an int seed or a key)."""
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    return jax.random.normal(key, (n,), dtype)


def ntk_lambda_max_traced(network: Any, X: Float[Array, "n d"],
                          iterations: int | None = None) -> Float[Array, ""]:
    """`ntk_lambda_max` without input checks (safe inside `jit`; what gradient descent's
    `save_lambda_max` calls at each save)."""
    n = X.shape[0]
    return _ntk_lambda_max(network, X, start_vector(n, X.dtype), n if iterations is None
                           else iterations)


@eqx.filter_jit
def _ntk_lambda_max(network, X, v0, iterations):
    params, static = trainable(network)
    outputs = lambda p: eqx.combine(p, static)(X)  # noqa: E731
    _, pullback = jax.vjp(outputs, params)

    def matvec(v):  # K2 v = J (J^T v)
        return jax.jvp(outputs, (params,), pullback(v))[1]

    return lanczos_max(matvec, v0, iterations)


def ntk_lambda_max(network: Any, X: Float[Array, "n d"], *, iterations: int | None = None,
                   key: Any = 0) -> Float[Array, ""]:
    """`lambda_max(K2)`, the largest eigenvalue of the NTK on the inputs `X`, by
    Lanczos on the matrix-free products `K2 v = J (J^T v)` (module docstring).

    **Arguments:**

    - `network`: any nthdyn network.
    - `X`: inputs `(n, d)`.
    - `iterations`: Lanczos steps, at most `n`; `None` for `n` (exact to rounding).
      For large `n`, 30 to 50 steps give the top eigenvalue to near machine precision
      when it is separated from the rest.
    - `key`: seed (int) or key of the random start vector.

    Cost: `iterations` vjp+jvp pairs of the `n` outputs, `O(iterations n m^2 H)` for an
    MLP; memory `O(n m H + P)`.
    """
    check_network(network)
    X = check_inputs(X, "X", in_size=network.in_size)
    n = X.shape[0]
    iterations = n if iterations is None else positive_int(iterations, "iterations")
    if iterations > n:
        raise ValueError(f"iterations={iterations}: the NTK on {n} inputs has {n} eigenvalues; "
                         f"pass at most {n} (None for {n}, exact).")
    return _ntk_lambda_max(network, X, start_vector(n, X.dtype, key), iterations)


def relative_change(ntk: Float[Array, "time n n"]) -> np.ndarray:
    """`||K2(t) - K2(0)||_F / ||K2(0)||_F` at each saved time (from saved NTKs)."""
    K = np.asarray(ntk)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.linalg.norm(K - K[:1], axis=(-2, -1)) / np.linalg.norm(K[0])


class PhaseReport(eqx.Module):
    """The phase of one gradient-descent run and the numbers it was decided from.

    - `phase`: `"lazy"`, `"catapult"` or `"divergent"` (criteria in `classify_phase`).
    - `learning_rate`, `edge`: `eta` and the stability edge `2n / lambda_0`.
    - `loss_initial`, `loss_peak`, `loss_final`: the loss at step 0, its maximum, its
      last value.
    - `lambda_initial`, `lambda_final`: `lambda_max(K2)` at the first and last save.
    - `ntk_change`: `||K2_final - K2_0||_F / ||K2_0||_F`.
    """

    phase: str = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    edge: float = eqx.field(static=True)
    loss_initial: float = eqx.field(static=True)
    loss_peak: float = eqx.field(static=True)
    loss_final: float = eqx.field(static=True)
    lambda_initial: float = eqx.field(static=True)
    lambda_final: float = eqx.field(static=True)
    ntk_change: float = eqx.field(static=True)

    @property
    def code(self) -> int:
        """The phase's index in `PHASES` (what NetCDF files store)."""
        return PHASES.index(self.phase)


def classify_phase(loss: Any, lambda_final: float, learning_rate: float, n: int, *,
                   rise: float = 0.1) -> str:
    """The phase of a gradient-descent run from its saved losses (step 0 first) and
    `lambda_max(K2)` at its last save:

    - `"divergent"`: a loss is not finite, or the last loss is not below the first,
      or `lambda_final >= 2n / eta` (the last step is still unstable: the top mode
      grows by `|1 - eta lambda / n| > 1` per step);
    - `"catapult"`: otherwise, when the loss rose above `(1 + rise)` times its start
      at some save (then it came back below its start with `lambda_final < 2n / eta`);
    - `"lazy"`: otherwise (the loss never rose by more than `rise`; in the linear
      regime below the edge it falls monotonically).
    """
    loss = np.asarray(loss, dtype=float)
    if loss.ndim != 1 or loss.size < 2:
        raise ValueError(f"loss has shape {loss.shape}: pass the losses of one run at two or "
                         "more saved steps, step 0 first.")
    learning_rate = positive_float(learning_rate, "learning_rate")
    rise = positive_float(rise, "rise")
    n = positive_int(n, "n")
    if (not np.all(np.isfinite(loss)) or not np.isfinite(lambda_final)
            or loss[-1] >= loss[0] or lambda_final >= 2 * n / learning_rate):
        return "divergent"
    if loss.max() > (1 + rise) * loss[0]:
        return "catapult"
    return "lazy"


def phase_report(solution: Any, *, rise: float = 0.1) -> PhaseReport:
    """The phase of a gradient-descent run (`classify_phase`), from the `Solution` of a
    `GradientDescentProblem` solved with `save_ntk=True` or `save_lambda_max=True`, or
    of a `DiscreteNTHProblem` (the hierarchy's prediction of the phase). `lambda_max`
    comes from the saved `lambda_max` or else from the saved NTKs (`n x n`,
    `O(n^3)` per save); `ntk_change` needs the saved NTKs (NaN without them).
    Save step 0 and the last step (the default saves every step)."""
    from ._problems import DiscreteNTHProblem, GradientDescentProblem

    if not isinstance(solution, Solution) or not isinstance(
            solution.problem, (GradientDescentProblem, DiscreteNTHProblem)):
        what = (type(solution.problem).__name__ if isinstance(solution, Solution)
                else type(solution).__name__)
        raise TypeError(f"solution={what}: pass the Solution of a GradientDescentProblem "
                        "(solved with save_ntk=True or save_lambda_max=True) or of a "
                        "DiscreteNTHProblem.")
    saved = solution.observables.get("lambda_max")
    if solution.ntk is None and saved is None:
        raise ValueError("solution has neither saved NTKs nor lambda_max: solve the "
                         "GradientDescentProblem with save_ntk=True or save_lambda_max=True.")
    problem = solution.problem
    t = np.asarray(solution.t)
    if t[0] != 0:
        raise ValueError(f"solution's first saved step is {t[0]:g}: save step 0 too "
                         "(saveat=[0, ...]), the phase is judged against the start.")
    n, eta = problem.data.n, problem.learning_rate
    if saved is not None:
        top = np.asarray(saved, dtype=float)
    else:
        K = np.asarray(solution.ntk)
        finite = np.all(np.isfinite(K), axis=(-2, -1))
        top = np.full(len(K), np.nan)
        top[finite] = np.linalg.eigvalsh(K[finite])[:, -1]
    change = np.full(len(t), np.nan) if solution.ntk is None else relative_change(solution.ntk)
    loss = np.asarray(solution.loss)
    with np.errstate(invalid="ignore", over="ignore"):
        peak = float(np.max(np.where(np.isfinite(loss), loss, np.inf)))
    return PhaseReport(
        phase=classify_phase(loss, float(top[-1]), eta, n, rise=rise), learning_rate=eta,
        edge=2 * n / float(top[0]), loss_initial=float(loss[0]), loss_peak=peak,
        loss_final=float(loss[-1]), lambda_initial=float(top[0]), lambda_final=float(top[-1]),
        ntk_change=float(change[-1]))

"""Kernels of the Neural Tangent Hierarchy, K(r) for r >= 2 (Huang & Yau eq. (9)-(10)).

By definition (eq. (10); the derivative rules (3.1) of arXiv:1909.08156)

    K(r+1)(a_1, ..., a_r, b) = <grad_theta K(r)(a_1, ..., a_r), grad_theta f_b>,

the derivative of `K(r)` along the vector field `theta -> grad_theta f(x_b; theta)`.
That field moves with `theta`, so a second derivative also differentiates it:
`K(r)` is not symmetric in its last slots. Here every `K(r)` is built by that
recursion from a base `K2(theta)`: nested forward-mode derivatives (`jax.jvp`)
of a function of the parameters.

- With the structured K2 of `_kernels.py` as the base (the MLP families), a full
  `K(r)` costs about `(3 n)^(r-2)` times one K2, i.e.
  `O(3^(r-2) n^(r-2) (n m^2 H + n1 n m H))`, and memory `O(n1 n^(r-1))` for the
  result plus a few parameter-sized tangents.
- With the Jacobian product `J1 J^T` as the base (any network, and the plain-JAX
  reference), `O(3^(r-2) n^(r-2) n1 n P)` with `P ~ H m^2` parameters.
- A contraction of all slots after the second with vectors `c_3, ..., c_r`
  (what the hierarchy's right-hand side needs) is one nested derivative along
  the fields `theta -> grad_theta (c_j . f(X; theta))`, with no factor `n`:
  `O(3^(r-2))` times one K2. The top kernel never has to be stored.

**Factored directions** (`factored=True`, layered networks with the structured
base). A direction `grad_theta f_b` is `g_k(x_b) (x) u_k(x_b)` on every linear map
`k` (output sensitivity times input, `AbstractLayeredNetwork`), so the derivative
along it is `d/de K(network with P_k + e g_k u_k^T)`, the rank-one term kept as a
factor (`LowRankMatrix`): the tangent of `P_k u` costs `O(out_k + in_k)` instead of
`O(out_k in_k)`, no parameter-sized direction is formed, and the `n` directions of
a slot are batched (`vmap`, within `BATCH_BYTES`), so their tangents pass through
each hidden matrix as one matrix product. A contraction's direction
`grad (c . f(X))` is `n` such terms. The moving field is still differentiated (the
factors are functions of the perturbed network). For `K(4)` on `n = 6` points of an
MLP with `H = 2`, `m = 4096` this is about 5x faster than dense directions; with no
wide trained matrix (`H = 1`, `d = 8`) it is slower, so `factored=None` chooses by
shape (`factoring_chosen`: the rule of the factored flow, `n` columns per slot).

The same nesting with the directions held at fixed parameters gives the Taylor
kernels of discrete gradient descent (`fixed=True`, `_taylor.py`, eq. (29)).

Slot convention: the first slot runs over `X_first` (the training inputs, or test
points as in eq. (22)), every other slot over the training inputs `X`.

The public functions check their arguments with `_arguments.py`, then call the
traceable `derived_kernel` and `derived_contraction`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._dispatch import fast_jit
from .._network import AbstractLayeredNetwork, AbstractNetwork, low_rank, low_rank_pays, trainable
from ._arguments import (
    MAX_KERNEL_BYTES,
    can_factor,
    check_factored,
    check_kernel_size,
    check_order,
    check_vector,
    kernel_call,
)
from ._ntk import layer_factors


def _base_of_network(X_first, X, base, symmetric):
    def k2(network):
        return base(network, X_first, None if symmetric else X)

    return k2


def derive_along_each(fn: Callable, X: Array, at: Any = None, factored: bool = False,
                      batch: int = 1) -> Callable:
    """`network -> [D_{v_b} fn(network)]_b`, the new slot last: along the moving field
    `v_b(theta) = grad f_b(theta)` (eq. (10), the NTH's `K(r+1)`), or, with `at` (a
    network), along the fixed vectors `v_b = grad f_b(at)`, which are not
    differentiated (the Taylor kernels of eq. (29)).

    `factored=False`: each `v_b` is a parameter-sized vector (`jax.grad`), and the
    directions are taken one after the other. `factored=True` (layered networks held
    with `LowRankMatrix` weights, see `derived_kernel`): `v_b` is the outer product
    `g_k(x_b) (x) u_k(x_b)` on every trained map `k`, added as a rank-one term, and the
    directions are taken `batch` at a time (`vmap` within a batch, `direction_batches`)."""

    def derived(network):
        if not factored:
            params, static = trainable(network)
            point = params if at is None else trainable(at)[0]
            moved = lambda p: fn(eqx.combine(p, static))  # noqa: E731

            def along(x_b):
                direction = jax.grad(lambda p: eqx.combine(p, static).apply(x_b))(point)
                return jax.jvp(moved, (params,), (direction,))[1]

            return jnp.moveaxis(jax.lax.map(along, X), 0, -1)
        sensitivities, inputs = layer_factors(network if at is None else at, X)

        def along(g, u):
            left, right = [x[:, None] for x in g], [x[:, None] for x in u]
            return _derivative(fn, network, left, right)

        out = jax.lax.map(lambda gu: along(*gu), (sensitivities, inputs), batch_size=batch)
        return jnp.moveaxis(out, 0, -1)

    return derived


def derive_along(fn: Callable, X: Array, c: Array, at: Any = None, factored: bool = False
                 ) -> Callable:
    """`network -> D_v fn(network)` along `v = grad (c . f(X))` at the network
    (moving), or at the fixed network `at`: the new slot contracted with `c`.
    `factored=True`: `v` is `sum_b c_b g_k(x_b) (x) u_k(x_b)` on every trained map,
    added as `n` rank-one terms (see `derive_along_each`)."""

    def derived(network):
        if not factored:
            params, static = trainable(network)
            point = params if at is None else trainable(at)[0]
            direction = jax.grad(lambda p: jnp.dot(c, eqx.combine(p, static)(X)))(point)
            return jax.jvp(lambda p: fn(eqx.combine(p, static)), (params,), (direction,))[1]
        sensitivities, inputs = layer_factors(network if at is None else at, X)
        left = [(g * c[:, None]).T for g in sensitivities]
        return _derivative(fn, network, left, [u.T for u in inputs])

    return derived


def _derivative(fn: Callable, network: Any, left: list, right: list) -> Array:
    """`d/de fn(network + e sum_k left_k right_k^T)` at `e = 0`, the terms added to
    every trained map `k` (`left[k]`, `right[k]` indexed by map, `r` columns each)."""

    def moved(e):
        net = network
        for k in network.trained_maps():
            net = net.add_outer(k, e * left[k], right[k])
        return fn(net)

    zero = jnp.zeros((), left[0].dtype)
    return jax.jvp(moved, (zero,), (jnp.ones_like(zero),))[1]


def factoring_chosen(network: AbstractNetwork, base: Callable, columns: int,
                     factored: bool | None) -> bool:
    """Whether to take the directions of a derived kernel as factors: `factored` if
    given (`check_factored`), else where it pays: a layered network, the structured
    base and `low_rank_pays(network, columns)` for the `columns` the directions add
    (the rule of the factored flow)."""
    if check_factored(network, base, factored) is not None:
        return bool(factored)
    return can_factor(network, base) and low_rank_pays(network, columns)


#: Batch factored directions while their tangents take about this much memory (bytes).
BATCH_BYTES = 512 * 1024**2


def direction_batches(network: AbstractLayeredNetwork, points: int, n: int, levels: int
                      ) -> tuple[int, ...]:
    """How many factored directions each level of a derived kernel takes at a time,
    innermost first: as many as fit in `BATCH_BYTES`, estimated as 8 float64 copies
    of the activations of the `points` inputs for each direction of a batch."""
    per_direction = 8 * 8 * points * sum(network.tap_sizes())
    room, batches = max(1, BATCH_BYTES // per_direction), []
    for _ in range(levels):
        batches.append(max(1, min(n, room)))
        room //= batches[-1]
    return tuple(batches)


@fast_jit(static=("order", "base", "symmetric", "fixed", "factored"))
def derived_kernel(network, X_first, X, order, base, symmetric, fixed=False, factored=None):
    """`K(order)` (`fixed=False`: directions that move with theta, eq. (10)) or the
    Taylor kernel `calK(order)` (`fixed=True`: directions at the network's parameters,
    eq. (29)) from the base `K2`; `factored`: rank-one directions (None: where it pays,
    `factoring_chosen`); no input checks (traceable)."""
    factored = factoring_chosen(network, base, (order - 2) * X.shape[0], factored)
    batches = (1,) * (order - 2)
    if factored and order > 2:
        network = low_rank(network, order - 2)
        batches = direction_batches(network, X_first.shape[0] + X.shape[0], X.shape[0],
                                    order - 2)
    at = network if fixed else None
    fn = _base_of_network(X_first, X, base, symmetric)
    for batch in batches:
        fn = derive_along_each(fn, X, at, factored, batch)
    return fn(network)


@fast_jit(static=("base", "symmetric", "fixed", "factored"))
def derived_contraction(network, X_first, X, vectors, base, symmetric, fixed=False,
                        factored=None):
    """`K(r)[c_3, ..., c_r]` (or `calK(r)[...]` with `fixed=True`), `r = 2 + len(vectors)`,
    matrix-free; `factored` as in `derived_kernel` (each direction adds `n` columns);
    no input checks (traceable)."""
    columns = len(vectors) * X.shape[0]  # each direction has rank n
    factored = factoring_chosen(network, base, columns, factored)
    if factored and vectors:
        network = low_rank(network, columns)
    at = network if fixed else None
    fn = _base_of_network(X_first, X, base, symmetric)
    for c in vectors:
        fn = derive_along(fn, X, c, at, factored)
    return fn(network)


def hierarchy_kernel(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    order: int,
    *,
    X_first: Float[Array, "n1 d"] | None = None,
    method: str = "auto",
    max_bytes: int = MAX_KERNEL_BYTES,
    factored: bool | None = None,
) -> Float[Array, "n1 n ..."]:
    """The full kernel `K(order)`, shape `(n1, n, ..., n)` with `order` slots.

    `K(2)` is the NTK (eq. (7)); `K(r+1)(..., b)` is the derivative of `K(r)`
    along `grad_theta f_b` (eq. (10)). The first slot runs over `X_first` (test
    points, eq. (22)) or over `X`; the others over the training inputs `X`.

    **Arguments:**

    - `network`: the network at its current parameters.
    - `X`: training inputs `(n, d)`.
    - `order`: `r >= 2`; `r >= 3` needs a smooth activation.
    - `X_first`: inputs for the first slot; `None` for `X` itself (then `K(r)` is
      symmetric in its first two slots).
    - `method`: `"structured"` (layered networks; the default for them),
      `"jacobian"` (plain-JAX `J J^T` base, any network), or `"auto"`.
    - `max_bytes`: refuse to build a tensor larger than this.
    - `factored`: take each direction `grad f_b` as rank-one factors on every
      linear map (`True`), as a parameter-sized vector (`False`), or choose by
      shape (`None`, `factoring_chosen`); the same kernel either way.

    Cost: about `(3 n)^(r-2)` times one K2 (see the module docstring);
    memory `8 n1 n^(r-1)` bytes for the result.
    """
    return checked_kernel(network, X, order, X_first, method, max_bytes, factored, fixed=False,
                          instead="hierarchy_contraction (matrix-free contractions of the last "
                                  "slots)")


def checked_kernel(network: AbstractNetwork, X: Any, order: Any, X_first: Any, method: Any,
                   max_bytes: Any, factored: Any, fixed: bool, instead: str) -> Array:
    """`derived_kernel` after the checks of `hierarchy_kernel` (`fixed=False`) and
    `taylor_kernel` (`fixed=True`, the kernel `calK`); a tensor above `max_bytes` is
    refused with `instead` suggested."""
    call = kernel_call(network, X, X_first, method, factored)
    order = check_order(network, order, smooth=call.smooth)
    check_kernel_size(f"{'calK' if fixed else 'K'}({order})", call.X_first.shape[0],
                      call.X.shape[0], order, max_bytes, instead)
    # factored None: chosen by shape, when traced
    return derived_kernel(network, call.X_first, call.X, order, call.base, call.symmetric,
                          fixed, call.factored)


def hierarchy_contraction(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    vectors: Sequence[Float[Array, " n"]],
    *,
    X_first: Float[Array, "n1 d"] | None = None,
    method: str = "auto",
    factored: bool | None = None,
) -> Float[Array, "n1 n"]:
    """`K(r)[c_3, ..., c_r]`: the kernel of order `r = 2 + len(vectors)` with its
    slots 3..r contracted with `vectors` (slot 3 with `vectors[0]`), as an
    `(n1, n)` matrix, without building the tensor (matrix-free).

    `K(r+1)[..., r] = sum_b K(r+1)(..., b) r_b` is the derivative of `K(r)` along
    `J^T r` (eq. (10)). Cost: about `3^(r-2)` times one K2. `factored`: as in
    `hierarchy_kernel` (each direction `J^T c` is `n` rank-one terms per map).
    """
    return checked_contraction(network, X, vectors, X_first, method, factored, fixed=False)


def checked_contraction(network: AbstractNetwork, X: Any, vectors: Any, X_first: Any,
                        method: str, factored: bool | None, fixed: bool) -> Array:
    """`derived_contraction` after the checks of `hierarchy_contraction` (`fixed=False`)
    and `taylor_contraction` (`fixed=True`, the kernel `calK`)."""
    call = kernel_call(network, X, X_first, method, factored)
    n = call.X.shape[0]
    if not isinstance(vectors, (list, tuple)):
        is_array = isinstance(vectors, (np.ndarray, jax.Array))
        if not (is_array and vectors.ndim == 2):
            what = f"an array of shape {vectors.shape}" if is_array else repr(vectors)
            K = "calK" if fixed else "K"
            raise TypeError(f"vectors={what}: pass a list of vectors of shape ({n},), one "
                            f"per slot after the second: vectors=[c] for {K}(3)[c], [c3, c4] "
                            f"for {K}(4)[c3, c4].")
    vectors = tuple(check_vector(c, f"vectors[{j}]", n, call.X.dtype)
                    for j, c in enumerate(vectors))
    check_order(network, 2 + len(vectors), name="2 + len(vectors)", smooth=call.smooth)
    # factored None: chosen by shape, when traced
    return derived_contraction(network, call.X_first, call.X, vectors, call.base, call.symmetric,
                               fixed, call.factored)


def contract_last(kernel: Float[Array, "... n"], r: Float[Array, " n"]) -> Float[Array, "..."]:
    """`K[..., r] = sum_b K(..., b) r_b`."""
    return jnp.tensordot(kernel, r, axes=([-1], [0]))


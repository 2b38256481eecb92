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

Slot convention: the first slot runs over `X_first` (the training inputs, or test
points as in eq. (22)), every other slot over the training inputs `X`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import positive_int
from .._data import float_values, check_inputs
from .._network import AbstractLayeredNetwork, AbstractNetwork, trainable
from ._ntk import check_network, ntk_jacobian, ntk_structured

#: Default cap on the size of a full kernel tensor (bytes).
MAX_KERNEL_BYTES = 2 * 1024**3

_BASES = {"structured": ntk_structured, "jacobian": ntk_jacobian}


def _base_for(network: AbstractNetwork, method: str) -> Callable:
    if method == "auto":
        method = "structured" if isinstance(network, AbstractLayeredNetwork) else "jacobian"
    if method not in _BASES:
        raise ValueError(f"method={method!r}: use 'auto', 'structured' or 'jacobian'.")
    if method == "structured" and not isinstance(network, AbstractLayeredNetwork):
        raise TypeError(
            f"method='structured' needs a layered network (MLP, JacotMLP), not "
            f"{type(network).__name__}; use method='jacobian'."
        )
    return _BASES[method]


def check_order(network: AbstractNetwork, order: Any, *, name: str = "order") -> int:
    """`order >= 2`, and a smooth activation when `order >= 3` (Assumption 2.1)."""
    order = positive_int(order, name, minimum=2)
    if order >= 3 and not network.smooth():
        what = (network.activation.name if isinstance(network, AbstractLayeredNetwork)
                else type(network).__name__)
        raise ValueError(
            f"{name}={order} needs a smooth activation, but the network uses "
            f"{what}: K(3) and higher contain its second and higher "
            "derivatives, which vanish almost everywhere and are infinite at 0 "
            "(Huang & Yau, Assumption 2.1). Use a smooth activation, e.g. "
            "nthdyn.Softplus(sharpness=10.0), or stay at order 2 (the NTK)."
        )
    return order


def _kernel_of_params(static, X_first, X, base, symmetric):
    def k2(params):
        return base(eqx.combine(params, static), X_first, None if symmetric else X)

    return k2


def _derive_along_each(fn, static, X):
    """`theta -> [D_{grad f_b} fn(theta)]_b`, the new slot last (eq. (10))."""

    def derived(params):
        def along(x_b):
            direction = jax.grad(lambda p: eqx.combine(p, static).apply(x_b))(params)
            return jax.jvp(fn, (params,), (direction,))[1]

        return jnp.moveaxis(jax.lax.map(along, X), 0, -1)

    return derived


def _derive_along(fn, static, X, c):
    """`theta -> D_{grad (c . f(X))} fn(theta)`: a contraction of the new slot."""

    def derived(params):
        direction = jax.grad(lambda p: jnp.dot(c, eqx.combine(p, static)(X)))(params)
        return jax.jvp(fn, (params,), (direction,))[1]

    return derived


@eqx.filter_jit
def _hierarchy_kernel(network, X_first, X, order, base, symmetric):
    params, static = trainable(network)
    fn = _kernel_of_params(static, X_first, X, base, symmetric)
    for _ in range(order - 2):
        fn = _derive_along_each(fn, static, X)
    return fn(params)


@eqx.filter_jit
def _hierarchy_contraction(network, X_first, X, vectors, base, symmetric):
    params, static = trainable(network)
    fn = _kernel_of_params(static, X_first, X, base, symmetric)
    for c in vectors:
        fn = _derive_along(fn, static, X, c)
    return fn(params)


def _inputs(network, X, X_first):
    X = check_inputs(X, "X", in_size=network.in_size)
    if X_first is None:
        return X, X, True
    return X, check_inputs(X_first, "X_first", in_size=network.in_size), False


def check_max_bytes(max_bytes: Any) -> Any:
    """`max_bytes`, a number of bytes > 0 (`math.inf` for no cap)."""
    number = isinstance(max_bytes, numbers.Real) and not isinstance(max_bytes, bool)
    if not number or not max_bytes > 0:
        raise (ValueError if number else TypeError)(
            f"max_bytes={max_bytes!r}: pass the largest kernel tensor to build, in bytes "
            "(a number > 0), e.g. max_bytes=2 * 1024**3 (the default, 2 GiB).")
    return max_bytes


def kernel_bytes(n_first: int, n: int, order: int) -> int:
    """Bytes of a float64 `K(order)` with `n_first x n^(order-1)` entries."""
    return 8 * n_first * n ** (order - 1)


def hierarchy_kernel(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    order: int,
    *,
    X_first: Float[Array, "n1 d"] | None = None,
    method: str = "auto",
    max_bytes: int = MAX_KERNEL_BYTES,
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

    Cost: about `(3 n)^(r-2)` times one K2 (see the module docstring);
    memory `8 n1 n^(r-1)` bytes for the result.
    """
    check_network(network)
    order = check_order(network, order)
    max_bytes = check_max_bytes(max_bytes)
    X, X_first, symmetric = _inputs(network, X, X_first)
    size = kernel_bytes(X_first.shape[0], X.shape[0], order)
    if size > max_bytes:
        raise MemoryError(
            f"K({order}) on {X_first.shape[0]} x {X.shape[0]}^{order - 1} points would take "
            f"{size / 1e9:.3g} GB (max_bytes={max_bytes / 1e9:.3g} GB). Use "
            "hierarchy_contraction (matrix-free contractions of the last slots), fewer "
            "points, or a larger max_bytes if the memory is there."
        )
    return _hierarchy_kernel(network, X_first, X, order, _base_for(network, method), symmetric)


def hierarchy_contraction(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    vectors: Sequence[Float[Array, " n"]],
    *,
    X_first: Float[Array, "n1 d"] | None = None,
    method: str = "auto",
) -> Float[Array, "n1 n"]:
    """`K(r)[c_3, ..., c_r]`: the kernel of order `r = 2 + len(vectors)` with its
    slots 3..r contracted with `vectors` (slot 3 with `vectors[0]`), as an
    `(n1, n)` matrix, without building the tensor (matrix-free).

    `K(r+1)[..., r] = sum_b K(r+1)(..., b) r_b` is the derivative of `K(r)` along
    `J^T r` (eq. (10)). Cost: about `3^(r-2)` times one K2.
    """
    check_network(network)
    X, X_first, symmetric = _inputs(network, X, X_first)
    is_array = isinstance(vectors, (np.ndarray, jax.Array))
    if not isinstance(vectors, (list, tuple)) and not (is_array and vectors.ndim == 2):
        what = f"an array of shape {vectors.shape}" if is_array else repr(vectors)
        raise TypeError(f"vectors={what}: pass a list of vectors of shape ({X.shape[0]},), one "
                        "per slot after the second: vectors=[c] for K(3)[c], [c3, c4] for "
                        "K(4)[c3, c4].")
    for j, c in enumerate(vectors):
        if not isinstance(c, jax.core.Tracer):
            values = float_values(c, f"vectors[{j}]")
            if values.size and not np.all(np.isfinite(values)):
                raise ValueError(f"vectors[{j}] has a non-finite entry "
                                 f"({values.ravel()[~np.isfinite(values.ravel())][0]}): "
                                 "pass finite vectors.")
    vectors = tuple(jnp.asarray(c, X.dtype) for c in vectors)
    check_order(network, 2 + len(vectors), name="2 + len(vectors)")
    for j, c in enumerate(vectors):
        if c.shape != (X.shape[0],):
            raise ValueError(
                f"vectors[{j}] has shape {c.shape}: each vector contracts a slot over the "
                f"{X.shape[0]} training inputs, shape ({X.shape[0]},)."
            )
    return _hierarchy_contraction(network, X_first, X, vectors, _base_for(network, method), symmetric)


def contract_last(kernel: Float[Array, "... n"], r: Float[Array, " n"]) -> Float[Array, "..."]:
    """`K[..., r] = sum_b K(..., b) r_b`."""
    return jnp.tensordot(kernel, r, axes=([-1], [0]))


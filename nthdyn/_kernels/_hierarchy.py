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

The same nesting with the directions held at fixed parameters gives the Taylor
kernels of discrete gradient descent (`fixed=True`, `_taylor.py`, eq. (29)).

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


def base_kernel(network: AbstractNetwork, method: str) -> Callable:
    """The base `K2(network, X_first, X2)` that every derived kernel starts from:
    `"structured"` (eq. (7), layered networks), `"jacobian"` (`J1 J^T`, any network)
    or `"auto"` (structured where the network is layered)."""
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


def check_vector(value: Any, name: str, n: int, dtype: Any) -> Float[Array, " n"]:
    """`value` as a finite vector of shape `(n,)`: it contracts a slot over the `n`
    training inputs (a traced value is checked for its shape only)."""
    if not isinstance(value, jax.core.Tracer):
        values = float_values(value, name).ravel()
        if values.size and not np.all(np.isfinite(values)):
            raise ValueError(f"{name} has a non-finite entry ({values[~np.isfinite(values)][0]}): "
                             "pass finite vectors.")
    value = jnp.asarray(value, dtype)
    if value.shape != (n,):
        raise ValueError(f"{name} has shape {value.shape}: it contracts a slot over the {n} "
                         f"training inputs, shape ({n},).")
    return value


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


def derive_along_each(fn: Callable, static: Any, X: Array, at: Any = None) -> Callable:
    """`theta -> [D_{v_b} fn(theta)]_b`, the new slot last: along the moving field
    `v_b(theta) = grad f_b(theta)` (eq. (10), the NTH's `K(r+1)`), or, with `at`, along
    the fixed vectors `v_b = grad f_b(at)`, which are not differentiated (the Taylor
    kernels of eq. (29))."""

    def derived(params):
        point = params if at is None else at

        def along(x_b):
            direction = jax.grad(lambda p: eqx.combine(p, static).apply(x_b))(point)
            return jax.jvp(fn, (params,), (direction,))[1]

        return jnp.moveaxis(jax.lax.map(along, X), 0, -1)

    return derived


def derive_along(fn: Callable, static: Any, X: Array, c: Array, at: Any = None) -> Callable:
    """`theta -> D_v fn(theta)` along `v = grad (c . f(X))` at `theta` (moving), or at
    the fixed `at`: the new slot contracted with `c`."""

    def derived(params):
        point = params if at is None else at
        direction = jax.grad(lambda p: jnp.dot(c, eqx.combine(p, static)(X)))(point)
        return jax.jvp(fn, (params,), (direction,))[1]

    return derived


@eqx.filter_jit
def derived_kernel(network, X_first, X, order, base, symmetric, fixed=False):
    """`K(order)` (`fixed=False`: directions that move with theta, eq. (10)) or the
    Taylor kernel `calK(order)` (`fixed=True`: directions at the network's parameters,
    eq. (29)) from the base `K2`; no input checks (traceable)."""
    params, static = trainable(network)
    fn = _kernel_of_params(static, X_first, X, base, symmetric)
    for _ in range(order - 2):
        fn = derive_along_each(fn, static, X, params if fixed else None)
    return fn(params)


@eqx.filter_jit
def derived_contraction(network, X_first, X, vectors, base, symmetric, fixed=False):
    """`K(r)[c_3, ..., c_r]` (or `calK(r)[...]` with `fixed=True`), `r = 2 + len(vectors)`,
    matrix-free; no input checks (traceable)."""
    params, static = trainable(network)
    fn = _kernel_of_params(static, X_first, X, base, symmetric)
    for c in vectors:
        fn = derive_along(fn, static, X, c, params if fixed else None)
    return fn(params)


def kernel_inputs(network: AbstractNetwork, X: Any, X_first: Any) -> tuple[Array, Array, bool]:
    """`(X, X_first, symmetric)`: the checked training inputs, the first slot's inputs
    (`X` itself when `X_first` is None, then the kernel is symmetric in its first two
    slots)."""
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


def check_kernel_size(what: str, n_first: int, n: int, order: int, max_bytes: Any,
                      instead: str) -> None:
    """Refuse to build the tensor `what` (`n_first x n^(order-1)` entries) above
    `max_bytes`; the message suggests `instead`."""
    max_bytes = check_max_bytes(max_bytes)
    size = kernel_bytes(n_first, n, order)
    if size > max_bytes:
        raise MemoryError(
            f"{what} on {n_first} x {n}^{order - 1} points would take {size / 1e9:.3g} GB "
            f"(max_bytes={max_bytes / 1e9:.3g} GB). Use {instead}, fewer points, or a larger "
            "max_bytes if the memory is there.")


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
    X, X_first, symmetric = kernel_inputs(network, X, X_first)
    check_kernel_size(f"K({order})", X_first.shape[0], X.shape[0], order, max_bytes,
                      "hierarchy_contraction (matrix-free contractions of the last slots)")
    return derived_kernel(network, X_first, X, order, base_kernel(network, method), symmetric)


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
    X, X_first, symmetric = kernel_inputs(network, X, X_first)
    is_array = isinstance(vectors, (np.ndarray, jax.Array))
    if not isinstance(vectors, (list, tuple)) and not (is_array and vectors.ndim == 2):
        what = f"an array of shape {vectors.shape}" if is_array else repr(vectors)
        raise TypeError(f"vectors={what}: pass a list of vectors of shape ({X.shape[0]},), one "
                        "per slot after the second: vectors=[c] for K(3)[c], [c3, c4] for "
                        "K(4)[c3, c4].")
    vectors = tuple(check_vector(c, f"vectors[{j}]", X.shape[0], X.dtype)
                    for j, c in enumerate(vectors))
    check_order(network, 2 + len(vectors), name="2 + len(vectors)")
    return derived_contraction(network, X_first, X, vectors, base_kernel(network, method),
                               symmetric)


def contract_last(kernel: Float[Array, "... n"], r: Float[Array, " n"]) -> Float[Array, "..."]:
    """`K[..., r] = sum_b K(..., b) r_b`."""
    return jnp.tensordot(kernel, r, axes=([-1], [0]))


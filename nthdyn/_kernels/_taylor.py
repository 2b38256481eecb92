"""Taylor kernels of discrete gradient descent, Huang & Yau Section 4 item 2, eq. (29).

A gradient-descent step with the loss `L = 1/(2n) sum_b r_b^2`, `r = f - y`, moves the
parameters by a *fixed* vector,

    theta_{k+1} = theta_k + delta,     delta = -(eta/n) J^T r = -(eta/n) sum_b r_b grad f_b(theta_k),

so any function `g(theta)` at the new point is the Taylor series of `g` along `delta`:

    g(theta_k + delta) = sum_{j>=0} 1/j! (-eta/n)^j sum_{b_1..b_j} r_b1 ... r_bj
                         grad^j g(theta_k)[grad f_b1(theta_k), ..., grad f_bj(theta_k)].   (*)

The directions `grad f_b(theta_k)` are evaluated once, at `theta_k`, and held fixed while
`g` is differentiated. For `g = K2` the coefficients are the Taylor kernels of eq. (29),

    calK(r)(a1, a2, b1, ..., b_{r-2}) = grad^(r-2) K2(a1, a2)[grad f_b1, ..., grad f_b_{r-2}],

and for `g = f_a` the output Taylor kernels `F(j+1)(a, b1..bj) = grad^j f_a[grad f_b1, ...]`
(`F(2) = K2`). So (*) reads

    K2(theta_{k+1}) = sum_{j>=0} 1/j! (-eta/n)^j calK(j+2)[r, ..., r],          (eq. (29))
    f(theta_{k+1})  = sum_{j>=0} 1/j! (-eta/n)^j F(j+1)[r, ..., r]      (F(1)[] = f),

with every contraction over the last slots. The printed eq. (29) has `(-eta)^r / n^r`
and no factorial; the derivation above gives `(-eta/n)^(r-2) / (r-2)!` for the term of
`calK(r)` (and its sum runs up to `s`, not `s - 1`, if `calK(s)` is the last kernel kept).

**Relation to the NTH kernels.** The NTH's `K(r+1)(.., b) = <grad K(r), grad f_b>`
differentiates along the *moving* field `theta -> grad f_b(theta)` (eq. (10)).
At first order the two agree: `calK(3) = K(3)`. At second order the moving field is
differentiated too:

    K(4)(a1, a2, c, e) = D_e <grad K2(a1, a2), grad f_c>
                       = grad^2 K2(a1, a2)[grad f_c, grad f_e] + <grad K2(a1, a2), Hess f_c grad f_e>,

so `K(4) - calK(4) = <grad K2(a1, a2), Hess f_c . grad f_e>`: the Hessian of the output of
slot 3 (`c`) applied to the gradient of the output of slot 4 (`e`). It is not symmetric
in `(c, e)` (`calK(4)` is). `F(3)` follows from `K(3)`:
`K(3)(a, b, c) = F(3)(a, b, c) + F(3)(b, a, c)` with `F(3)` symmetric in its last two
slots, hence `F(3)(a, b, c) = (K(3)(a, b, c) + K(3)(a, c, b) - K(3)(b, c, a)) / 2`
(`symmetrized_output_kernel`).

**Mechanism and cost.** The NTH's (`_hierarchy.py`: `derived_kernel`,
`derived_contraction`, `derive_along_each`): a base `K2(theta)` (the structured eq. (7)
for layered networks, `J1 J^T` otherwise) or `f(theta)`, and nested `jax.jvp`s, but
along directions computed at the fixed `theta_0` (`fixed=True` / `at=theta_0`: closed
over, not differentiated).

- A full `calK(r)` (`taylor_kernel`) costs about `(2 n)^(r-2)` times one K2 plus
  `n^(r-2)` backward passes for the directions, i.e. `O(2^(r-2) n^(r-2) (n m^2 H + n1 n m H))`
  for the MLP families (the NTH's `K(r)` costs `(3 n)^(r-2)`: its directions are
  differentiated too); memory `8 n1 n^(r-1)` bytes for the result.
- A contraction `calK(r)[c_3, ..., c_r]` (`taylor_contraction`) is one nested derivative
  along the fixed vectors `J^T c_j`: about `2^(r-2)` times one K2, no factor `n`.
- A full `F(r)` (`output_taylor_kernel`) costs about `(2 n)^(r-1)` forward passes of the
  `n1` outputs, `O(2^(r-1) n^(r-1) n1 m^2 H)`.
- The expansion of the output update (`output_update`) is `order` nested jvps of `f`
  along the one vector `J^T r`: `O(2^order n m^2 H)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import positive_int
from .._network import AbstractNetwork
from ._arguments import (
    MAX_KERNEL_BYTES,
    check_kernel_size,
    check_order,
    check_vector,
    kernel_inputs,
)
from ._hierarchy import checked_contraction, checked_kernel, derive_along, derive_along_each
from ._ntk import check_network

#: What a full tensor too large to build can be replaced by.
_MATRIX_FREE = "taylor_contraction or output_update (matrix-free contractions)"


@eqx.filter_jit
def output_taylor_kernel_traced(network, X_first, X, order):
    """`output_taylor_kernel` without input checks (traceable): `f(X_first)`
    differentiated `order - 1` times along the fixed directions `grad f_b`."""
    fn = lambda net: net(X_first)  # noqa: E731
    for _ in range(order - 1):
        fn = derive_along_each(fn, X, at=network)
    return fn(network)


@eqx.filter_jit
def _output_update(network, X_first, X, r, order):
    c = -r / X.shape[0]  # the step is grad (c . f) = -(1/n) J^T r, fixed at the parameters
    fn = lambda net: net(X_first)  # noqa: E731
    coefficients = [fn(network)]
    for j in range(1, order + 1):
        fn = derive_along(fn, X, c, at=network)
        coefficients.append(fn(network) / math.factorial(j))
    return jnp.stack(coefficients)


def taylor_kernel(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    order: int,
    *,
    X_first: Float[Array, "n1 d"] | None = None,
    method: str = "auto",
    max_bytes: int = MAX_KERNEL_BYTES,
    factored: bool | None = None,
) -> Float[Array, "n1 n ..."]:
    """The Taylor kernel `calK(order)` of eq. (29), shape `(n1, n, ..., n)` with
    `order` slots:

        calK(r)(a1, a2, b1..b_{r-2}) = grad^(r-2) K2(a1, a2)[grad f_b1, ..., grad f_b_{r-2}],

    all derivatives at the network's parameters with the directions `grad f_b` held
    fixed there (module docstring). `calK(2) = K2`, `calK(3) = K(3)`; from `r = 4` on
    it differs from the NTH's `K(r)` and is symmetric in its slots `3..r`.

    **Arguments:** as `hierarchy_kernel`: `network`, training inputs `X`, `order >= 2`
    (a smooth activation for `order >= 3`), `X_first` for the first slot (test
    points), `method` (`"auto"`, `"structured"`, `"jacobian"`), `max_bytes`, `factored`
    (rank-one directions; `None` chooses by shape).

    Cost: about `(2 n)^(r-2)` times one K2; memory `8 n1 n^(r-1)` bytes.
    """
    return checked_kernel(network, X, order, X_first, method, max_bytes, factored, fixed=True,
                          instead=_MATRIX_FREE)


def taylor_contraction(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    vectors: Sequence[Float[Array, " n"]],
    *,
    X_first: Float[Array, "n1 d"] | None = None,
    method: str = "auto",
    factored: bool | None = None,
) -> Float[Array, "n1 n"]:
    """`calK(r)[c_3, ..., c_r]`, `r = 2 + len(vectors)`: the Taylor kernel with its
    slots `3..r` contracted, as an `(n1, n)` matrix, matrix-free: the derivative of
    K2 along the fixed vectors `J^T c_j` (`J` at the network's parameters).

    With `vectors = [r] * j` this is the `eta^j` coefficient of
    `K2(theta - eta/n J^T r)` times `j! (-n)^j` (eq. (29)). Cost: about `2^(r-2)`
    times one K2. `factored`: as in `taylor_kernel`.
    """
    return checked_contraction(network, X, vectors, X_first, method, factored, fixed=True)


def output_taylor_kernel(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    order: int,
    *,
    X_first: Float[Array, "n1 d"] | None = None,
    max_bytes: int = MAX_KERNEL_BYTES,
) -> Float[Array, "n1 n ..."]:
    """The output Taylor kernel `F(order)(a, b1, ..., b_{order-1}) =
    grad^(order-1) f_a[grad f_b1, ..., grad f_b_{order-1}]`, directions fixed at the
    network's parameters, shape `(n1, n, ..., n)` with `order` slots. `F(2) = K2`;
    `F(3)` is `symmetrized_output_kernel(K(3))`; in general `F(r)` is the coefficient of
    `f` in the expansion of the step (module docstring).

    Cost: about `(2 n)^(r-1)` forward passes of the `n1` outputs.
    """
    check_network(network)
    order = check_order(network, order)
    X, X_first, _ = kernel_inputs(network, X, X_first)
    check_kernel_size(f"F({order})", X_first.shape[0], X.shape[0], order, max_bytes,
                      _MATRIX_FREE)
    return output_taylor_kernel_traced(network, X_first, X, order)


def output_update(
    network: AbstractNetwork,
    X: Float[Array, "n d"],
    r: Float[Array, " n"],
    order: int,
    *,
    X_first: Float[Array, "n1 d"] | None = None,
) -> Float[Array, "order_plus_one n1"]:
    """The expansion of the output after a gradient-descent step in powers of the
    step size:

        f(theta - eta/n J^T r) = sum_{j=0}^{order} eta^j c_j + O(eta^(order+1)),
        c_j = 1/j! (-1/n)^j grad^j f[J^T r, ..., J^T r] = 1/j! (-1/n)^j F(j+1)[r, ..., r],

    with `J` at the network's parameters; returns `c_0..c_order` stacked, shape
    `(order + 1, n1)` (`c_0 = f`; the outputs at `X_first`, by default `X`).

    `r` is the residual `f - y` that drives the step (any vector of shape `(n,)`).
    Matrix-free: `order` nested jvps of `f` along the one vector `J^T r`,
    `O(2^order n m^2 H)`. `order >= 2` needs a smooth activation.
    """
    check_network(network)
    order = positive_int(order, "order")
    if order >= 2:
        check_order(network, order + 1, name="order + 1")
    X, X_first, _ = kernel_inputs(network, X, X_first)
    r = check_vector(r, "r", X.shape[0], X.dtype)
    return _output_update(network, X_first, X, r, order)


def symmetrized_output_kernel(K3: Float[Array, "n n n"]) -> Float[Array, "n n n"]:
    """`F(3)(a, b, c) = (K(3)(a, b, c) + K(3)(a, c, b) - K(3)(b, c, a)) / 2`: the
    output Taylor kernel of order 3 from the NTH's `K(3)` (module docstring), which
    holds at every `theta` since `K(3)(a, b, c) = F(3)(a, b, c) + F(3)(b, a, c)`."""
    return 0.5 * (K3 + jnp.swapaxes(K3, 1, 2) - jnp.transpose(K3, (2, 0, 1)))

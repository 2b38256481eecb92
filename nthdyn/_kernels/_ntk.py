"""The Neural Tangent Kernel K2, eq. (7) of Huang & Yau.

`K2(x_a, x_b) = <grad_theta f(x_a), grad_theta f(x_b)>`.

For a layered network (`AbstractLayeredNetwork`: every parameter block `P_k`
enters through a linear map `y_k = P_k u_k`), `grad_{P_k} f(x) = g_k(x) (x) u_k(x)`
with the output sensitivity `g_k = df/dy_k`, so

    K2(x_a, x_b) = sum_k <g_k(x_a), g_k(x_b)> <u_k(x_a), u_k(x_b)>,

which is eq. (7): for the Huang-Yau MLP the map `k = l <= H` gives
`G^(l) = <sigma'_l W^(l+1)T/sqrt(m) ... sigma'_H a/sqrt(m)> <x^(l-1)_a, x^(l-1)_b>`
and the readout gives `G^(H+1) = <x^(H)_a, x^(H)_b>`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._data import check_inputs
from .._dispatch import fast_jit
from .._network import AbstractLayeredNetwork, AbstractNetwork, trainable

def check_network(network, name: str = "network") -> None:
    """An error naming `name` unless `network` is an nthdyn network instance."""
    if not isinstance(network, AbstractNetwork):
        what = (f"{network.__name__} (a class)" if isinstance(network, type)
                else type(network).__name__)
        raise TypeError(f"{name}={what}: pass an nthdyn network instance such as "
                        "nthdyn.MLP(in_size=3, width=8, key=0).")


Factors = tuple[tuple[Float[Array, "n _"], ...], tuple[Float[Array, "n _"], ...]]


def layer_factors(network: AbstractLayeredNetwork, X: Float[Array, "n d"]) -> Factors:
    """The output sensitivities `g_k(x)` and inputs `u_k(x)` of every linear map,
    for each row of `X`: one forward and one backward pass per input.

    Cost: `O(n (d m + (H - 1) m^2))` time, `O(n m H)` memory.
    """
    zeros = tuple(jnp.zeros((size,), X.dtype) for size in network.tap_sizes())

    def one(x):
        return jax.grad(lambda taps: network.trace(x, taps), has_aux=True)(zeros)

    return jax.vmap(one)(X)


def gram_from_factors(
    factors_a: Factors, factors_b: Factors, maps: tuple[int, ...] | None = None
) -> Float[Array, "na nb"]:
    """`sum_k (G_k^a G_k^bT) * (U_k^a U_k^bT)`: `O(n_a n_b m H)`. `maps`: the
    linear maps to sum over (`network.trained_maps()`; all by default)."""
    (g_a, u_a), (g_b, u_b) = factors_a, factors_b
    return sum((ga @ gb.T) * (ua @ ub.T)
               for k, (ga, gb, ua, ub) in enumerate(zip(g_a, g_b, u_a, u_b))
               if maps is None or k in maps)


def ntk_structured(
    network: AbstractLayeredNetwork,
    X1: Float[Array, "n1 d"],
    X2: Float[Array, "n2 d"] | None = None,
) -> Float[Array, "n1 n2"]:
    """K2 from the layer structure, eq. (7). No input checks (safe inside `jit`).

    Cost: `O((n1 + n2) m^2 H)` for the passes plus `O(n1 n2 m H)` for the Gram
    matrices; memory `O((n1 + n2) m H + n1 n2)`. The Jacobian route costs
    `O(n1 n2 m^2 H)` time and `O((n1 + n2) m^2 H)` memory.
    """
    factors_1 = layer_factors(network, X1)
    maps = network.trained_maps()  # frozen maps contribute nothing
    if X2 is None:
        K = gram_from_factors(factors_1, factors_1, maps)
        return 0.5 * (K + K.T)  # exactly symmetric
    return gram_from_factors(factors_1, layer_factors(network, X2), maps)


def ntk_jacobian(
    network: AbstractNetwork,
    X1: Float[Array, "n1 d"],
    X2: Float[Array, "n2 d"] | None = None,
) -> Float[Array, "n1 n2"]:
    """K2 as the plain-JAX product `J1 J2^T` of full Jacobians (any network).

    Cost: `O(n1 n2 P)` time and `O((n1 + n2) P)` memory with `P ~ H m^2`
    parameters. The reference that `ntk_structured` is tested against.
    """
    params, static = trainable(network)

    def jacobian(X):
        rows = jax.vmap(jax.grad(lambda p, x: eqx.combine(p, static).apply(x)), (None, 0))(
            params, X
        )
        return [leaf.reshape(X.shape[0], -1) for leaf in jax.tree_util.tree_leaves(rows)]

    J1 = jacobian(X1)
    J2 = J1 if X2 is None else jacobian(X2)
    # sum of per-block products: the Jacobian is never concatenated (half the memory)
    return sum(a @ b.T for a, b in zip(J1, J2))


@fast_jit()
def ntk_traced(network, X1, X2=None):
    """`ntk` without input checks (safe inside `jit`/`vmap`): structured for layered
    networks, the Jacobian product otherwise."""
    if isinstance(network, AbstractLayeredNetwork):
        return ntk_structured(network, X1, X2)
    return ntk_jacobian(network, X1, X2)


def ntk(
    network: AbstractNetwork,
    X1: Float[Array, "n1 d"],
    X2: Float[Array, "n2 d"] | None = None,
) -> Float[Array, "n1 n2"]:
    """The Neural Tangent Kernel `K2(x_a, x_b) = <grad f(x_a), grad f(x_b)>`, eq. (7).

    Uses the layer structure (`ntk_structured`) for `MLP` and `JacotMLP`, and the
    Jacobian product (`ntk_jacobian`) for any other Equinox network.

    **Arguments:**

    - `network`: the network at its current parameters.
    - `X1`: inputs `(n1, d)`.
    - `X2`: second inputs `(n2, d)`; `None` for `K2(X1, X1)` (symmetric, PSD).

    **Returns:** the `(n1, n2)` kernel matrix.

    Cost for the MLP families: `O((n1 + n2) m^2 H + n1 n2 m H)` time,
    `O((n1 + n2) m H)` memory (the Jacobian route: `O(n1 n2 m^2 H)`, `O(n m^2 H)`).
    """
    check_network(network)
    X1 = check_inputs(X1, "X1", in_size=network.in_size)
    if X2 is not None:
        X2 = check_inputs(X2, "X2", in_size=network.in_size)
    return ntk_traced(network, X1, X2)

"""The training objective and the velocity of the parameters: loss, weight decay, time scale.

Paper 002, eq. (2): `phi(theta) = L(theta) + R(theta)` with the half mean square loss
`L = 1/(2n) sum_b (f(x_b) - y_b)^2` and the weight decay of a two-layer network

    R = 1/(2m) sum_j (lambda_u |u_j|^2 + lambda_theta |theta_j|^2).

**Generalization to any network.** `R` is a sum over the *trained linear maps*
`P_k` of a layered network (`MLP`: `W^(1)..W^(H)` and `a`; `TwoLayer`: map 0 is
`theta`, map 1 is `u`; `JacotMLP`: `[W | b]` per layer):

    R = 1/(2m) sum_k lambda_k ||P_k||_F^2,      m = network.width,

so for `TwoLayer` it is eq. (2) with `weight_decay=(lambda_theta, lambda_u)`. The
`1/m` makes `m grad_{(u_j, theta_j)} R` the per-particle regularizer
`grad r(u_j, theta_j)` of the mean-field objective (16). For a network that is not
layered (no maps, no width) one `lambda` acts on all parameters:
`R = lambda/2 ||theta||^2`. Frozen maps are not trained and carry no `R`.

**Time scale.** The parameters move with velocity `-c grad phi`. `c = 1` is the
gradient flow of Huang & Yau (eq. 3). The mean-field time scale `c = m`,

    d(u_j, theta_j)/dt = -m grad_{(u_j, theta_j)} phi
                       = -(1/n) sum_b alpha r_b grad_{(u, theta)} [u h(theta . x_b)]_j - grad r(u_j, theta_j),

is paper 002 eq. (20) with `eta = 1`: each particle moves `O(1)` in time `O(1)`
whatever `m` (for `alpha = 1`), and the outputs obey `df/dt = -(c/n) K2 r` with
`c K2 = m K2 -> alpha^2 K_inf`.

**Noise.** With temperature `tau > 0` the flow is the Langevin equation
`d theta = -c grad phi dt + sqrt(2 tau) dW` (Section V, the entropy-regularized
mean field), whose stationary density is `exp(-c phi / tau)` when it is
normalizable: for a quadratic `phi` with Hessian `H`, a Gaussian of covariance
`(tau / c) H^-1` around the minimizer.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import positive_float
from .._network import AbstractLayeredNetwork, AbstractNetwork
from .._solve import half_mean_square


def _per_map(network: AbstractNetwork, value: Any, name: str, what: str, *,
             allow_zero: bool) -> tuple[float, ...]:
    """`value` as one number per linear map of a layered network (a number: the same
    for every map), or one number for any other network."""
    if isinstance(network, AbstractLayeredNetwork):
        maps = len(network.tap_sizes())
        expected = (f"one {what} per linear map of {type(network).__name__} ({maps} maps, map 0 "
                    "first and the readout last; TwoLayer: (theta, u))")
    else:
        maps = 1
        expected = f"one {what} ({type(network).__name__} is not a layered network)"
    if isinstance(value, (list, tuple)):
        if len(value) != maps:
            raise ValueError(f"{name}={value!r} has {len(value)} entries: pass a number or "
                             f"{expected}.")
        return tuple(positive_float(v, f"{name}[{i}]", allow_zero=allow_zero)
                     for i, v in enumerate(value))
    return (positive_float(value, name, allow_zero=allow_zero),) * maps


def check_weight_decay(network: AbstractNetwork, weight_decay: Any) -> tuple[float, ...]:
    """`weight_decay` as one `lambda >= 0` per linear map (TwoLayer:
    `(lambda_theta, lambda_u)`), or one `lambda` for a network that is not layered."""
    return _per_map(network, weight_decay, "weight_decay", "lambda >= 0", allow_zero=True)


def check_time_scale(network: AbstractNetwork, time_scale: Any) -> tuple[float, ...]:
    """`c > 0` (one, or one per linear map), or `"mean_field"` for `c = m` (the width)."""
    if isinstance(time_scale, str) and time_scale == "mean_field":
        if not isinstance(network, AbstractLayeredNetwork):
            raise ValueError(f"time_scale='mean_field' needs a network with a width m (c = m); "
                             f"{type(network).__name__} has none: pass a number.")
        return (float(network.width),) * len(network.tap_sizes())
    if isinstance(time_scale, str):
        raise ValueError(f"time_scale={time_scale!r}: pass a number c > 0 or 'mean_field' (c = m).")
    return _per_map(network, time_scale, "time_scale", "c > 0", allow_zero=False)


class Objective(eqx.Module):
    """`phi = L + R` and the velocity `-c grad phi` (see the module docstring).

    `lambdas` holds one weight decay per linear map (one for a network without
    maps), `scales` one time scale `c_k` per map: map `k` moves with velocity
    `-c_k grad_{P_k} phi` (per-layer learning rates, paper 002 eq. (11)-(13)). Both
    are arrays, so problems that differ only in these values share one compiled
    solve. `norm` is the `1/m` of `R`. Cost: one gradient of `L` (`O(n P)`) plus
    `O(P)` for `R`.
    """

    lambdas: Float[Array, " maps"]
    scales: Float[Array, " maps"]
    norm: float = eqx.field(static=True)

    @classmethod
    def of(cls, network: AbstractNetwork, weight_decay: Any = 0.0,
           time_scale: Any = 1.0) -> Objective:
        lambdas = check_weight_decay(network, weight_decay)
        scales = check_time_scale(network, time_scale)
        norm = 1.0 / network.width if isinstance(network, AbstractLayeredNetwork) else 1.0
        dtype = jnp.result_type(float)
        return cls(jnp.asarray(lambdas, dtype), jnp.asarray(scales, dtype), norm)

    def _blocks(self, network: Any) -> list[tuple[int, Any]]:
        """`(map index, where)` of every trained linear map of `network` (a partitioned
        network's trained part works too): `where(network)` selects its arrays."""
        if isinstance(network, AbstractLayeredNetwork):
            return [(k, lambda n, k=k: n.map_parameters(k)) for k in network.trained_maps()]
        return [(0, lambda n: [leaf for leaf in jax.tree_util.tree_leaves(n)
                               if eqx.is_inexact_array(leaf)])]

    def penalty(self, params: Any, static: Any) -> jax.Array:
        """`R(theta)` of the trained parameters `params` (the rest is `static`)."""
        network = eqx.combine(params, static)
        total = sum(self.lambdas[k] * sum(jnp.sum(jnp.square(a)) for a in where(network))
                    for k, where in self._blocks(network))
        return 0.5 * self.norm * total

    def value(self, params: Any, static: Any, X: jax.Array, y: jax.Array) -> jax.Array:
        """`phi = L + R`."""
        return half_mean_square(eqx.combine(params, static)(X), y) + self.penalty(params, static)

    def gradient(self, params: Any, static: Any, X: jax.Array, y: jax.Array) -> Any:
        """`grad phi = grad L + grad R`."""
        return jax.grad(self.value)(params, static, X, y)

    def velocity(self, params: Any, static: Any, X: jax.Array, y: jax.Array) -> Any:
        """`-c_k grad_{P_k} phi` on each trained map `k`: the drift of the flow."""
        gradient = self.gradient(params, static, X, y)
        network = eqx.combine(gradient, static)
        for k, where in self._blocks(network):
            network = eqx.tree_at(where, network, replace_fn=lambda g, k=k: -self.scales[k] * g)
        return eqx.partition(network, network.trainable_filter())[0]

"""Observables that tell the lazy (NTK) regime from the rich (mean-field) one (paper 002,
Sections IV-V, Table I, Fig. 6-7).

- relative movement of each trained linear map, `||P_k(t) - P_k(0)||_F / ||P_k(0)||_F`
  (the NTK regime keeps it `O(1/alpha)`, the mean-field regime `O(1)`);
- relative change of the NTK on the training set, `||K2(t) - K2(0)||_F / ||K2(0)||_F`;
- the particle cloud `(u_j, theta_j)` of a network with one hidden layer (the
  readout weight and the incoming weights of hidden unit `j`), a `neuron` dimension;
- the fraction of "wasted" neurons, `|u_j| < threshold` (Fig. 6(d), (g)).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._lazy import xr
from .._network import AbstractLayeredNetwork, AbstractNetwork, LowRankMatrix


def _blocks(network: AbstractNetwork) -> list[list[Array]]:
    """The parameter arrays of each trained linear map (one block of all parameters
    for a network that is not layered)."""
    if isinstance(network, AbstractLayeredNetwork):
        return [list(network.map_parameters(k)) for k in network.trained_maps()]
    return [[leaf for leaf in jax.tree_util.tree_leaves(network) if eqx.is_inexact_array(leaf)]]


def relative_movement(network: AbstractNetwork, initial: AbstractNetwork) -> Float[Array, " layer"]:
    """`||P_k - P_k(0)||_F / ||P_k(0)||_F` for each trained linear map `k` (in the order
    of `trained_maps()`; one entry for a network that is not layered). Cost `O(P)`."""
    now, start = _blocks(network), _blocks(initial)

    def norm(arrays):
        return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in arrays))

    return jnp.stack([norm([a - b for a, b in zip(p, q)]) / norm(q) for p, q in zip(now, start)])


def has_particles(network: AbstractNetwork) -> bool:
    """Whether `network` has one hidden layer, whose units are particles `(u_j, theta_j)`."""
    return isinstance(network, AbstractLayeredNetwork) and network.depth == 1


def particles(network: AbstractLayeredNetwork) -> tuple[Float[Array, " neuron"],
                                                         Float[Array, "neuron input_dim"]]:
    """`(u, theta)`: the readout weight `u_j` and incoming weights `theta_j` of each hidden
    unit of a network with one hidden layer (`TwoLayer`: its `u`, `theta`; `MLP(depth=1)`:
    `a`, the rows of `W^(1)`)."""
    if not has_particles(network):
        raise ValueError(f"particles: {type(network).__name__} with depth "
                         f"{getattr(network, 'depth', None)} has no single hidden layer; the "
                         "particle cloud is defined for networks with one (e.g. nthdyn.TwoLayer).")
    theta = network.map_parameters(0)[0]
    u = network.map_parameters(network.depth)[0]
    theta = theta.dense() if isinstance(theta, LowRankMatrix) else theta
    return jnp.reshape(u, (-1,)), theta


def wasted_fraction(u: Any, threshold: float = 0.1) -> Any:
    """The fraction of neurons with `|u_j| < threshold` along the last axis of `u` (a
    `Solution`'s `observables["particle_u"]`, a Dataset's `particle_u`, or an array).

    The default `0.1` is a tenth of the teacher's `u_i = 1` of paper 002 Fig. 6: such
    a neuron carries under a tenth of one teacher neuron's share of the output."""
    if threshold <= 0:
        raise ValueError(f"threshold={threshold!r}: must be > 0.")
    if isinstance(u, xr.DataArray):
        return (np.abs(u) < threshold).mean("neuron")
    return np.mean(np.abs(np.asarray(u)) < threshold, axis=-1)

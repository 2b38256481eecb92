"""The deep fully connected network of Huang & Yau, eq. (1)-(2)."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._activation import AbstractActivation, as_activation
from .._checks import positive_float, positive_int
from ._base import (AbstractLayeredNetwork, add_outer_to, as_key, check_frozen, check_weight,
                    normal_draws)


class MLP(AbstractLayeredNetwork):
    """Deep fully connected network in the Huang-Yau parametrization, eq. (1)-(2).

    `x^(0) = x`, `x^(l) = sigma(W^(l) x^(l-1)) / sqrt(m)` for `l = 1..H`, and
    `f(x) = a . x^(H)`. `W^(1)` is `m x d`, `W^(l)` is `m x m`, `a` has `m`
    entries; `W ~ N(0, sw^2)`, `a ~ N(0, sa^2)` (Xavier-like, Section 1).
    There is no `1/sqrt(d)` on the first layer: inputs are meant to have norm ~ 1.

    **Arguments:**

    - `in_size`: the input dimension `d`.
    - `width`: the hidden width `m`.
    - `depth`: the number of hidden layers `H` (a "two-layer network" has `H = 1`).
    - `activation`: a name (`"tanh"`, `"sigmoid"`, `"erf"`, `"softplus"`, `"gelu"`,
      `"relu"`, `"identity"`) or an activation object such as `Softplus(4.0)`.
    - `sw`, `sa`: the standard deviations of the weights and of the output layer.
    - `key`: a JAX random key (or an int seed) for the initialisation.
    - `frozen`: indices of linear maps that are not trained: `0..depth-1` for
      `W^(1)..W^(H)`, `depth` for the readout `a`. `MLP(d, m, 1, frozen=(1,))` is
      the two-layer network of the lecture notes (paper 004) that trains only `W^(1)`.

    `MLP.from_weights(weights, readout, ...)` builds one from given arrays.
    """

    weights: tuple[Float[Array, "m _"], ...]
    readout: Float[Array, " m"]
    activation: AbstractActivation
    in_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    sw: float = eqx.field(static=True)
    sa: float = eqx.field(static=True)
    frozen: tuple[int, ...] = eqx.field(static=True)
    key: PRNGKeyArray | None

    def __init__(
        self,
        in_size: int,
        width: int,
        depth: int = 1,
        activation: str | AbstractActivation = "tanh",
        *,
        sw: float = 1.0,
        sa: float = 1.0,
        frozen: Any = (),
        key: Any,
    ):
        self.in_size = positive_int(in_size, "in_size")
        self.width = positive_int(width, "width")
        self.depth = positive_int(depth, "depth")
        self.sw = positive_float(sw, "sw")
        self.sa = positive_float(sa, "sa")
        self.frozen = check_frozen(frozen, self.depth)
        self.activation = as_activation(activation)
        self.key = as_key(key)
        fan_in = (self.in_size,) + (self.width,) * (self.depth - 1)
        *weights, self.readout = normal_draws(
            self.key, tuple((self.width, n) for n in fan_in) + ((self.width,),),
            (self.sw,) * self.depth + (self.sa,), jnp.result_type(float))
        self.weights = tuple(weights)

    @classmethod
    def from_weights(
        cls,
        weights: Any,
        readout: Any,
        *,
        activation: str | AbstractActivation = "tanh",
        sw: float = 1.0,
        sa: float = 1.0,
        frozen: Any = (),
    ) -> MLP:
        """An `MLP` with the given weights `W^(1) (m, d), W^(2..H) (m, m)` and readout
        `a (m,)`. `sw`, `sa` only describe the initial distribution (for
        `remake(key=...)` and the infinite-width limit). Its provenance is a SHA-256
        of the weights, and `remake` needs a `key` to draw new ones."""
        if isinstance(weights, (jax.Array,)) or not isinstance(weights, (list, tuple)) \
                or not weights:
            raise TypeError("weights: pass a non-empty sequence of matrices [W1 (m, d), "
                            "W2 (m, m), ...], one per hidden layer.")
        first = check_weight(weights[0], "weights[0]", (None, None))
        width, in_size = first.shape
        hidden = tuple(check_weight(w, f"weights[{i}]", (width, width))
                       for i, w in enumerate(weights[1:], start=1))
        readout = check_weight(readout, "readout", (width,))
        template = eqx.filter_eval_shape(
            lambda: cls(in_size, width, len(weights), activation, sw=sw, sa=sa, frozen=frozen,
                        key=0))
        return eqx.tree_at(lambda net: (net.weights, net.readout, net.key), template,
                           ((first,) + hidden, readout, None))

    def hyperparameters(self):
        return dict(
            in_size=self.in_size,
            width=self.width,
            depth=self.depth,
            activation=self.activation,
            sw=self.sw,
            sa=self.sa,
            frozen=self.frozen,
        )

    def tap_sizes(self):
        return (self.width,) * self.depth + (1,)

    def map_parameters(self, k):
        return (self.weights[k],) if k < self.depth else (self.readout,)

    def trace(self, x, taps):
        scale = 1.0 / math.sqrt(self.width)
        inputs = []
        u = x
        for k, w in enumerate(self.weights):  # eq. (1)
            h = w @ u
            if taps is not None:
                h = h + taps[k]
            inputs.append(u)
            u = self.activation(h) * scale
        inputs.append(u)
        f = self.readout @ u  # eq. (2)
        if taps is not None:
            f = f + taps[-1][0]
        return f, tuple(inputs)

    def add_outer(self, k, left, right):
        if k == self.depth:  # the readout: a map with one output
            readout = self.readout + (left[0] @ right.T).astype(self.readout.dtype)
            return eqx.tree_at(lambda net: net.readout, self, readout)
        return eqx.tree_at(lambda net: net.weights[k], self,
                           add_outer_to(self.weights[k], left, right))

    def factorable(self, k):
        return None if k == self.depth else (lambda net: net.weights[k])

    def infinite_width(self, inner, expect):
        """Huang & Yau's parametrization (no `1/sqrt(d)` on the first layer,
        `1/sqrt(m)` after the activation, no biases; derived in docs/limits.md):

            S_1 = sw^2 x.x',                 T_1 = [0 trained] x.x'
            S_{l+1} = sw^2 L_l,              T_{l+1} = [l trained] L_l + sw^2 D_l T_l
            NNGP = sa^2 L_H,                 NTK = [H trained] L_H + sa^2 D_H T_H.
        """
        trained = self.trained_maps()
        S = inner.map(lambda a: self.sw**2 * a)
        T = inner.c if 0 in trained else 0.0 * inner.c
        for layer in range(1, self.depth + 1):
            L, D = expect(S)
            if layer < self.depth:
                T = (L.c if layer in trained else 0.0) + self.sw**2 * D * T
                S = L.map(lambda a: self.sw**2 * a)
        nngp = self.sa**2 * L.c
        ntk = (L.c if self.depth in trained else 0.0) + self.sa**2 * D * T
        return nngp, ntk

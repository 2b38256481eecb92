"""The fully connected network in Jacot's NTK parametrization (paper 003, Section 2)."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._activation import AbstractActivation, as_activation
from .._checks import positive_float, positive_int
from ._base import (AbstractLayeredNetwork, add_outer_to, as_key, check_frozen, check_weight,
                    normal_draws)


class JacotMLP(AbstractLayeredNetwork):
    """Fully connected network in Jacot's NTK parametrization (paper 003, Section 2).

    `alpha^(0) = x`, `alpha~^(l+1) = W^(l) alpha^(l) / sqrt(n_l) + beta b^(l)`,
    `alpha^(l) = sigma(alpha~^(l))`, and the output `f = alpha~^(L)` (linear).
    All parameters are `N(0, 1)`. Jacot's `L` (number of weight layers) is
    `depth + 1`: `depth` counts hidden layers as for `MLP`. `frozen` lists maps
    `(W^(k), b^(k))`, `k = 0..depth`, that are not trained (`depth`: the output layer).

    `JacotMLP.from_weights(weights, biases, ...)` builds one from given arrays.
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    activation: AbstractActivation
    in_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    frozen: tuple[int, ...] = eqx.field(static=True)
    key: PRNGKeyArray | None

    def __init__(
        self,
        in_size: int,
        width: int,
        depth: int = 1,
        activation: str | AbstractActivation = "relu",
        *,
        beta: float = 0.1,
        frozen: Any = (),
        key: Any,
    ):
        self.in_size = positive_int(in_size, "in_size")
        self.width = positive_int(width, "width")
        self.depth = positive_int(depth, "depth")
        self.beta = positive_float(beta, "beta", allow_zero=True)
        self.frozen = check_frozen(frozen, self.depth)
        self.activation = as_activation(activation)
        self.key = as_key(key)
        sizes = (self.in_size,) + (self.width,) * self.depth + (1,)
        # weight then bias of each layer, from one split of the key
        shapes = tuple(shape for n_in, n_out in zip(sizes[:-1], sizes[1:])
                       for shape in ((n_out, n_in), (n_out,)))
        draws = normal_draws(self.key, shapes, (1.0,) * len(shapes), jnp.result_type(float))
        self.weights, self.biases = draws[0::2], draws[1::2]

    @classmethod
    def from_weights(
        cls,
        weights: Any,
        biases: Any,
        *,
        activation: str | AbstractActivation = "relu",
        beta: float = 0.1,
        frozen: Any = (),
    ) -> JacotMLP:
        """A `JacotMLP` with the given weights `W^(0) (m, d), W^(1..H-1) (m, m),
        W^(H) (1, m)` and biases `b^(0..H-1) (m,), b^(H) (1,)`. Its provenance is a
        SHA-256 of the arrays, and `remake` needs a `key` to draw new ones."""
        for name, value in (("weights", weights), ("biases", biases)):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name}: pass a sequence of arrays, one per linear map (the "
                                "hidden layers, then the output layer).")
        if len(weights) < 2:
            raise ValueError(f"weights has {len(weights)} matrix: pass at least two, the hidden "
                             "layers and then the output layer (1, m).")
        if len(weights) != len(biases):
            raise ValueError(f"weights has {len(weights)} matrices but biases has "
                             f"{len(biases)} vectors: pass one bias per weight matrix.")
        first = check_weight(weights[0], "weights[0]", (None, None))
        width, in_size = first.shape
        depth = len(weights) - 1
        shapes = [(width, in_size)] + [(width, width)] * (depth - 1) + [(1, width)]
        ws = (first,) + tuple(check_weight(w, f"weights[{i}]", shapes[i])
                              for i, w in enumerate(weights[1:], start=1))
        bs = tuple(check_weight(b, f"biases[{i}]", (shapes[i][0],)) for i, b in enumerate(biases))
        template = eqx.filter_eval_shape(
            lambda: cls(in_size, width, depth, activation, beta=beta, frozen=frozen, key=0))
        return eqx.tree_at(lambda net: (net.weights, net.biases, net.key), template,
                           (ws, bs, None))

    def hyperparameters(self):
        return dict(
            in_size=self.in_size,
            width=self.width,
            depth=self.depth,
            activation=self.activation,
            beta=self.beta,
            frozen=self.frozen,
        )

    def tap_sizes(self):
        return (self.width,) * self.depth + (1,)

    def map_parameters(self, k):
        return (self.weights[k], self.biases[k])

    def trace(self, x, taps):
        inputs = []
        alpha = x
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            # [W | b] acts on the extended input [alpha / sqrt(n_l), beta].
            u = jnp.concatenate([alpha / math.sqrt(w.shape[1]), jnp.full((1,), self.beta, alpha.dtype)])
            pre = w @ u[:-1] + self.beta * b
            if taps is not None:
                pre = pre + taps[k]
            inputs.append(u)
            alpha = pre if k == last else self.activation(pre)
        return alpha[0], tuple(inputs)

    def add_outer(self, k, left, right):
        # P_k = [W | b] acts on [alpha / sqrt(n_l), beta]: the last row of `right` is the bias'.
        bias = self.biases[k] + (left @ right[-1]).astype(self.biases[k].dtype)
        net = eqx.tree_at(lambda n: n.biases[k], self, bias)
        return eqx.tree_at(lambda n: n.weights[k], net,
                           add_outer_to(self.weights[k], left, right[:-1]))

    def factorable(self, k):
        return lambda net: net.weights[k]

    def infinite_width(self, inner, expect):
        """Jacot et al. (paper 003, Prop. 1 and Thm. 1), maps `k = 0..H`:

            S_1 = x.x'/d + beta^2,           T_1 = [0 trained] S_1
            S_{l+1} = L_l + beta^2,          T_{l+1} = D_l T_l + [l trained] S_{l+1}
            NNGP = S_{H+1},                  NTK = T_{H+1}.
        """
        trained = self.trained_maps()
        beta2 = self.beta**2
        S = inner.map(lambda a: a / self.in_size + beta2)
        T = S.c if 0 in trained else 0.0 * S.c
        for layer in range(1, self.depth + 1):
            L, D = expect(S)
            S = L.map(lambda a: a + beta2)
            T = D * T + (S.c if layer in trained else 0.0)
        return S.c, T

"""The two-layer network with scale `alpha` of Fang, Dong & Zhang (paper 002), eq. (1).

    f(x) = (alpha / m) sum_j u_j h(theta_j . x),     u_j ~ N(0, sigma^2),  theta_j ~ N(0, sigma^2 I)

One model spans the three regimes of the survey: random features (Section III:
`theta` frozen, `train="readout"`), the NTK or lazy regime (Section IV:
`alpha = sqrt(m)`) and the mean-field regime (Section V: `alpha = 1`).

It is a layered network with two linear maps: map 0, `y_0 = theta x` (input `x`),
and map 1, the readout `y_1 = u . z` with input `z = (alpha/m) h(theta x)`. So the
structured NTK, the hierarchy kernels, the infinite-width kernels and low-rank
gradient descent apply unchanged (`nthdyn._kernels`, `nthdyn._limits`).

**Correspondence with `MLP(depth=1)`.** `MLP` computes `a . sigma(W^(1) x) / sqrt(m)`
with `W^(1) ~ N(0, sw^2)`, `a ~ N(0, sa^2)`, drawn from `split(key, 2)` in that
order. With `W^(1) = theta`, `a = u`, `sw = sa = sigma` and `alpha = sqrt(m)` the two
are the same function of the same parameters (`alpha/m = 1/sqrt(m)`), built from
the same key the same way: same weights, outputs, NTK and flow.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._activation import AbstractActivation, as_activation
from .._checks import positive_float, positive_int
from ._base import AbstractLayeredNetwork, add_outer_to, as_key, check_weight, normal_draws

#: What `train` may be, and the linear maps it freezes.
_TRAIN = {"all": (), "readout": (0,)}


def _check_train(train: Any) -> tuple[int, ...]:
    if not isinstance(train, str) or train not in _TRAIN:
        raise ValueError(
            f"train={train!r}: pass 'all' (train theta and u) or 'readout' (train u only: "
            "random features, paper 002 Section III)."
        )
    return _TRAIN[train]


class TwoLayer(AbstractLayeredNetwork):
    """Two-layer network `f(x) = (alpha/m) sum_j u_j h(theta_j . x)`, paper 002 eq. (1).

    **Arguments:**

    - `in_size`: the input dimension `d`.
    - `width`: the number of neurons `m`.
    - `alpha`: the scale, `alpha > 0`: `1` for the mean-field regime, `sqrt(m)` for
      the NTK regime (then this is `MLP(depth=1)`, see the module docstring).
    - `activation`: `h`, a name (`"sigmoid"`, `"tanh"`, `"relu"`, ...) or an
      activation object.
    - `sigma`: the standard deviation of `u_j` and of the entries of `theta_j`.
    - `train`: `"all"` (default) or `"readout"` (only `u`: random features).
    - `symmetric`: draw the neurons in pairs `(u_j, theta_j)`, `(-u_j, theta_j)`
      so that `f(x; theta_0) = 0` exactly (Chizat & Bach's symmetrized
      initialization; `width` must be even). The pairs separate during training.
    - `key`: a JAX random key (or an int seed).

    Fields `theta` `(m, d)` and `u` `(m,)`. `TwoLayer.from_weights(theta, u, ...)`
    builds one from given arrays.
    """

    theta: Float[Array, "m d"]
    u: Float[Array, " m"]
    activation: AbstractActivation
    in_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    sigma: float = eqx.field(static=True)
    train: str = eqx.field(static=True)
    symmetric: bool = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    frozen: tuple[int, ...] = eqx.field(static=True)
    key: PRNGKeyArray | None

    def __init__(
        self,
        in_size: int,
        width: int,
        *,
        alpha: float,
        activation: str | AbstractActivation = "sigmoid",
        sigma: float = 1.0,
        train: str = "all",
        symmetric: bool = False,
        key: Any,
    ):
        self.in_size = positive_int(in_size, "in_size")
        self.width = positive_int(width, "width")
        self.alpha = positive_float(alpha, "alpha")
        self.sigma = positive_float(sigma, "sigma")
        self.frozen = _check_train(train)
        self.train = train
        if symmetric not in (True, False):
            raise TypeError(f"symmetric={symmetric!r}: pass True or False.")
        if symmetric and self.width % 2:
            raise ValueError(f"symmetric=True with width={self.width}: the neurons come in "
                             "pairs (u, theta), (-u, theta); pass an even width.")
        self.symmetric = bool(symmetric)
        self.depth = 1
        self.activation = as_activation(activation)
        self.key = as_key(key)
        drawn = self.width // 2 if self.symmetric else self.width
        theta, u = normal_draws(self.key, ((drawn, self.in_size), (drawn,)),  # MLP(depth=1)'s order
                                (self.sigma, self.sigma), jnp.result_type(float))
        if self.symmetric:
            theta, u = jnp.concatenate([theta, theta]), jnp.concatenate([u, -u])
        self.theta, self.u = theta, u

    @classmethod
    def from_weights(
        cls,
        theta: Any,
        u: Any,
        *,
        alpha: float,
        activation: str | AbstractActivation = "sigmoid",
        sigma: float = 1.0,
        train: str = "all",
    ) -> TwoLayer:
        """A `TwoLayer` with the given `theta` `(m, d)` and `u` `(m,)`. `sigma` only
        describes the initial distribution (for `remake(key=...)` and the
        infinite-width limit). Its provenance is a SHA-256 of the weights."""
        theta = check_weight(theta, "theta", (None, None))
        width, in_size = theta.shape
        u = check_weight(u, "u", (width,))
        arguments = (cls, in_size, width, alpha, activation, sigma, train)
        try:
            template = _template(*arguments)
        except TypeError:  # an activation object that cannot be hashed: no cache
            template = _template.__wrapped__(*arguments)
        return eqx.tree_at(lambda net: (net.theta, net.u, net.key), template, (theta, u, None))

    def hyperparameters(self):
        return dict(in_size=self.in_size, width=self.width, alpha=self.alpha,
                    activation=self.activation, sigma=self.sigma, train=self.train,
                    symmetric=self.symmetric)

    def tap_sizes(self):
        return (self.width, 1)

    def map_parameters(self, k):
        return (self.theta,) if k == 0 else (self.u,)

    def trace(self, x, taps):
        h = self.theta @ x
        if taps is not None:
            h = h + taps[0]
        z = self.activation(h) * (self.alpha / self.width)  # eq. (1)
        f = self.u @ z
        if taps is not None:
            f = f + taps[1][0]
        return f, (x, z)

    def add_outer(self, k, left, right):
        if k == 1:  # the readout: a map with one output
            u = self.u + (left[0] @ right.T).astype(self.u.dtype)
            return eqx.tree_at(lambda net: net.u, self, u)
        return eqx.tree_at(lambda net: net.theta, self, add_outer_to(self.theta, left, right))

    def factorable(self, k):
        return (lambda net: net.theta) if k == 0 else None

    def infinite_width(self, inner, expect):
        """The expected kernels at initialization. With `S = sigma^2 x.x'` and
        `L = E[h(u) h(v)]`, `D = E[h'(u) h'(v)]` over `(u, v) ~ N(0, S)`:

            NNGP = (alpha^2/m) sigma^2 L,
            NTK  = (alpha^2/m) ([u trained] L + [theta trained] sigma^2 D x.x').

        Each is a mean of `m` independent neurons' terms, so these are the exact
        expectations at width `m`, not only its limit; at `alpha = sqrt(m)` they are
        the `MLP(depth=1)` limits, at `alpha = 1` they vanish like `1/m` (the
        mean-field time scale multiplies the NTK by `m`)."""
        trained = self.trained_maps()
        scale = self.alpha**2 / self.width
        L, D = expect(inner.map(lambda a: self.sigma**2 * a))
        nngp = scale * self.sigma**2 * L.c
        ntk = scale * ((L.c if 1 in trained else 0.0)
                       + (self.sigma**2 * D * inner.c if 0 in trained else 0.0 * inner.c))
        return nngp, ntk


@functools.lru_cache(maxsize=64)
def _template(cls, in_size, width, alpha, activation, sigma, train):
    """The abstract network (shapes only) that `from_weights` fills in, checked and built
    once per set of arguments: tracing `__init__` costs milliseconds, and sweeps call
    `from_weights` many times with the same arguments."""
    return eqx.filter_eval_shape(
        lambda: cls(in_size, width, alpha=alpha, activation=activation, sigma=sigma,
                    train=train, key=0))


def mlp_correspondence(network: TwoLayer) -> dict[str, Any]:
    """The `MLP.from_weights` arguments of the same function when `alpha = sqrt(m)`:
    `W^(1) = theta`, `a = u`, `sw = sa = sigma`, `frozen=(0,)` for `train="readout"`."""
    if not math.isclose(network.alpha, math.sqrt(network.width), rel_tol=1e-15):
        raise ValueError(f"alpha={network.alpha} is not sqrt(width)={math.sqrt(network.width)}: "
                         "only then is a TwoLayer an MLP(depth=1).")
    return dict(weights=[network.theta], readout=network.u, activation=network.activation,
                sw=network.sigma, sa=network.sigma, frozen=network.frozen)

"""Fully connected networks as Equinox modules.

Two parametrizations:

- `MLP`, Huang & Yau eq. (1)-(2): `x^(l) = sigma(W^(l) x^(l-1)) / sqrt(m)` for
  `l = 1..H`, `f(x) = a . x^(H)`, with `W ~ N(0, sw^2)`, `a ~ N(0, sa^2)`; no biases.
- `JacotMLP`, Jacot, Gabriel & Hongler Section 2: preactivations
  `W alpha / sqrt(n_l) + beta b`, all parameters `N(0, 1)`, a linear output layer.

Both are "layered": every trainable parameter enters through a linear map
`y = P u` (a bias is a column of `P` whose input is the constant `beta`). Then
`grad_P f = g (x) u` with `g = df/dy`, and every kernel is built from the inputs
`u` and the output sensitivities `g` of those maps (see `_kernels.py`). A network
that is not layered (any Equinox module mapping `R^d -> R`) still works with the
solvers and with the Jacobian-based NTK.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._activation import AbstractActivation, as_activation
from ._checks import positive_float, positive_int


def as_key(key: Any, *, name: str = "key") -> PRNGKeyArray:
    """Accept a typed JAX key, a raw `uint32[2]` key or a non-negative int seed."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if key < 0:
            raise ValueError(f"{name}={key}: an integer seed must be >= 0.")
        return jax.random.key(int(key))
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{name}={key!r} is not a random key. Pass jax.random.key(seed) or an int seed."
    )


class AbstractNetwork(eqx.Module):
    """A network `f(x; theta)` from `R^d` to `R`.

    The trainable parameters `theta` are its floating-point array leaves
    (`eqx.is_inexact_array`). Subclasses implement `apply` for one input;
    calling the network accepts one input `(d,)` or a batch `(n, d)`.
    """

    in_size: eqx.AbstractVar[int]

    @abc.abstractmethod
    def apply(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """The output for a single input."""

    def __call__(self, x: Float[Array, "*n d"]) -> Float[Array, "*n"]:
        x = jnp.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.in_size:
            raise ValueError(
                f"input of shape {x.shape}: this network takes one input of shape "
                f"({self.in_size},) or a batch of shape (n, {self.in_size})."
            )
        if x.ndim == 1:
            return self.apply(x)
        return jax.vmap(self.apply)(x)

    def config(self) -> dict[str, Any]:
        """A JSON-ready description (for provenance in results files)."""
        return {"class": type(self).__name__}

    def remake(self, **changes: Any) -> AbstractNetwork:
        raise TypeError(
            f"{type(self).__name__} cannot be rebuilt with {sorted(changes)}: only "
            "networks with hyperparameters (MLP, JacotMLP) support remake of "
            "width, depth, key, ..."
        )


class AbstractLayeredNetwork(AbstractNetwork):
    """A network whose parameters all enter through linear maps `y_k = P_k u_k`.

    `trace(x, taps)` returns the output with `taps[k]` added to `y_k`, and the
    inputs `u_k`. The gradient of `f` with respect to `taps[k]` at zero is the
    output sensitivity `g_k`, and `grad_{P_k} f = g_k (x) u_k`.
    """

    activation: eqx.AbstractVar[AbstractActivation]
    width: eqx.AbstractVar[int]
    depth: eqx.AbstractVar[int]
    key: eqx.AbstractVar[PRNGKeyArray]

    @abc.abstractmethod
    def tap_sizes(self) -> tuple[int, ...]:
        """The output size of each linear map, in the order of `trace`."""

    @abc.abstractmethod
    def trace(
        self, x: Float[Array, " d"], taps: tuple[Float[Array, " _"], ...] | None
    ) -> tuple[Float[Array, ""], tuple[Float[Array, " _"], ...]]:
        """`(f(x), (u_1, ..., u_K))` with `taps[k]` added to the output of map k."""

    def apply(self, x):
        return self.trace(x, None)[0]

    def map_parameters(self, k: int) -> tuple[Array, ...]:
        """The parameter arrays of linear map `k` (those that `frozen=(k,)` freezes)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not name the arrays of its linear maps, so none "
            "can be frozen; implement map_parameters(k)."
        )

    def trained_maps(self) -> tuple[int, ...]:
        """The indices of the linear maps that are trained: all but `frozen`.
        The structured kernels sum over these maps only."""
        frozen = getattr(self, "frozen", ())
        return tuple(k for k in range(len(self.tap_sizes())) if k not in frozen)

    def filter_spec(self):
        """A pytree of bools for `eqx.partition`: True on the trainable arrays
        (floating-point arrays of maps that are not frozen)."""
        spec = jax.tree_util.tree_map(eqx.is_inexact_array, self)
        for k in getattr(self, "frozen", ()):
            count = len(self.map_parameters(k))
            spec = eqx.tree_at(lambda net: net.map_parameters(k), spec, replace=(False,) * count)
        return spec

    @abc.abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments other than `key`."""

    def remake(self, **changes: Any) -> AbstractLayeredNetwork:
        """The same kind of network with some hyperparameters changed (a fresh
        initialisation from `key`, which is kept unless changed)."""
        arguments = {**self.hyperparameters(), "key": self.key}
        unknown = sorted(set(changes) - set(arguments))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no hyperparameter {unknown}; "
                f"it has {sorted(arguments)}."
            )
        return type(self)(**{**arguments, **changes})

    def config(self) -> dict[str, Any]:
        hyper = self.hyperparameters()
        hyper["activation"] = self.activation.name
        return {
            "class": type(self).__name__,
            **hyper,
            "key_data": np.asarray(jax.random.key_data(self.key)).tolist(),
        }


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
    key: PRNGKeyArray

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
        keys = jax.random.split(self.key, self.depth + 1)
        fan_in = (self.in_size,) + (self.width,) * (self.depth - 1)
        dtype = jnp.result_type(float)
        self.weights = tuple(
            self.sw * jax.random.normal(k, (self.width, n), dtype)
            for k, n in zip(keys[:-1], fan_in)
        )
        self.readout = self.sa * jax.random.normal(keys[-1], (self.width,), dtype)

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


class JacotMLP(AbstractLayeredNetwork):
    """Fully connected network in Jacot's NTK parametrization (paper 003, Section 2).

    `alpha^(0) = x`, `alpha~^(l+1) = W^(l) alpha^(l) / sqrt(n_l) + beta b^(l)`,
    `alpha^(l) = sigma(alpha~^(l))`, and the output `f = alpha~^(L)` (linear).
    All parameters are `N(0, 1)`. Jacot's `L` (number of weight layers) is
    `depth + 1`: `depth` counts hidden layers as for `MLP`. `frozen` lists maps
    `(W^(k), b^(k))`, `k = 0..depth`, that are not trained (`depth`: the output layer).
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    activation: AbstractActivation
    in_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    frozen: tuple[int, ...] = eqx.field(static=True)
    key: PRNGKeyArray

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
        keys = jax.random.split(self.key, 2 * (self.depth + 1)).reshape(-1, 2)
        dtype = jnp.result_type(float)
        self.weights = tuple(
            jax.random.normal(k[0], (n_out, n_in), dtype)
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
        )
        self.biases = tuple(
            jax.random.normal(k[1], (n_out,), dtype) for k, n_out in zip(keys, sizes[1:])
        )

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


def check_frozen(frozen: Any, depth: int) -> tuple[int, ...]:
    """Validate `frozen`: distinct map indices in `0..depth`, not all of them."""
    try:
        indices = tuple(sorted({int(k) for k in frozen}))
        valid = all(float(k) == int(k) for k in frozen)
    except (TypeError, ValueError):
        indices, valid = (), False
    if not valid or any(not 0 <= k <= depth for k in indices):
        raise ValueError(
            f"frozen={frozen!r}: pass a tuple of linear-map indices in 0..{depth} "
            f"(0..{depth - 1} hidden weights, {depth} the output layer), e.g. frozen=({depth},)."
        )
    if len(indices) == depth + 1:
        raise ValueError(
            f"frozen={frozen!r} freezes all {depth + 1} linear maps, so nothing would be "
            "trained: leave at least one index out."
        )
    return indices


def trainable(network: AbstractNetwork):
    """Split a network into its trainable parameters and the rest (`eqx.partition`):
    the floating-point arrays, less those of the maps a layered network freezes."""
    if isinstance(network, AbstractLayeredNetwork):
        return eqx.partition(network, network.filter_spec())
    return eqx.partition(network, eqx.is_inexact_array)


def parameter_count(network: AbstractNetwork) -> int:
    """The number of trainable parameters `P`."""
    return sum(p.size for p in jax.tree_util.tree_leaves(trainable(network)[0]))

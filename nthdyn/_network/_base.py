"""The abstract networks: what every network, and every layered network, provides.

A network maps `R^d -> R`; its trainable parameters `theta` are its floating-point
array leaves. A *layered* network has all its parameters enter through linear maps
`y_k = P_k u_k` (a bias is a column of `P_k` whose input is a constant). Then
`grad_{P_k} f = g_k (x) u_k` with the output sensitivity `g_k = df/dy_k`, and every
kernel is built from the inputs `u_k` and sensitivities `g_k` (`nthdyn._kernels`).

What differs between families of layered networks is stated here as abstract
methods and implemented by each family in its own module (`_mlp.py`, `_jacot.py`):
the linear maps (`tap_sizes`, `trace`, `map_parameters`), low-rank updates of their
matrices (`add_outer`, `factorable`), and the infinite-width layer recursion
(`infinite_width`). Kernels, limits and solvers call these methods and never ask
which concrete class they hold.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._activation import AbstractActivation


#: Arrays of up to this many entries are cut from a draw of this many, so that small
#: networks with the same number of arrays share one compiled sampler.
SMALL_DRAW = 2**14


@functools.partial(jax.jit, static_argnames=("sizes", "dtype"))
def _standard_normal(key: PRNGKeyArray, sizes: tuple[int, ...], dtype: Any) -> tuple[Array, ...]:
    """`N(0, 1)` vectors of `sizes`, the i-th from the i-th key of `jax.random.split(key)`.
    (The barrier keeps XLA from folding a later scale into the sampler's constants, which
    would change the last bit from that of `scale * jax.random.normal(...)`.)"""
    keys = jax.random.split(key, len(sizes))
    return tuple(jax.lax.optimization_barrier(jax.random.normal(k, (size,), dtype))
                 for k, size in zip(keys, sizes))


def normal_draws(key: PRNGKeyArray, shapes: tuple[tuple[int, ...], ...],
                 scales: tuple[float, ...], dtype: Any) -> tuple[Array, ...]:
    """`scales[i] * N(0, 1)` arrays of `shapes[i]`, the i-th from the i-th key of
    `jax.random.split(key, len(shapes))`: a network's initial weights, bit for bit
    those of `scales[i] * jax.random.normal(k_i, shapes[i])` drawn one by one.

    One compiled program draws them all (drawn one by one, every new shape compiles
    its own sampler, ~0.2 s each on a CPU). With JAX's partitionable threefry (the
    default), the first `s` entries of a longer draw are the draw of size `s`, so an
    array of at most `SMALL_DRAW` entries is cut from a draw of `SMALL_DRAW`: the
    program then depends only on the number of small arrays and the sizes of the
    large ones, and the architectures of a width sweep share it."""
    sizes = tuple(math.prod(shape) for shape in shapes)
    cut = tuple(jax.config.jax_threefry_partitionable and size <= SMALL_DRAW for size in sizes)
    draws = _standard_normal(key, tuple(SMALL_DRAW if c else size for c, size in zip(cut, sizes)),
                             dtype)
    if draws and isinstance(draws[0], jax.core.Tracer):  # under jit, vmap, eval_shape
        return tuple(scale * draw[:size].reshape(shape)
                     for draw, size, shape, scale in zip(draws, sizes, shapes, scales))
    # the small arrays are cut and scaled on the host (no program per shape; the IEEE
    # product is the same there)
    return tuple(jnp.asarray(scale * np.asarray(draw)[:size].reshape(shape)) if c
                 else scale * draw.reshape(shape)
                 for draw, c, size, shape, scale in zip(draws, cut, sizes, shapes, scales))


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


def weights_sha256(network: eqx.Module) -> str:
    """SHA-256 of a network's floating-point arrays (the provenance of given weights)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(eqx.filter(network, eqx.is_inexact_array)):
        array = np.asarray(leaf)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


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

    def smooth(self) -> bool:
        """Whether `f` has bounded derivatives of every order in `theta` (Huang & Yau,
        Assumption 2.1), as kernels `K(r >= 3)` need. A network of unknown structure
        is taken to be smooth."""
        return True

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments that `remake` can change (none by default)."""
        return {}

    def trainable_filter(self) -> Any:
        """A pytree of bools for `eqx.partition`: True on the trained arrays."""
        return jax.tree_util.tree_map(eqx.is_inexact_array, self)

    def config(self) -> dict[str, Any]:
        """A JSON-ready description (for provenance in results files)."""
        return {"class": type(self).__name__, "weights_sha256": weights_sha256(self)}

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

    `key` is the key the weights were drawn from, or `None` for a network built
    from given weights (`from_weights`): then its provenance is a hash of the
    weights, and `remake` draws new weights only when given a `key`.
    """

    activation: eqx.AbstractVar[AbstractActivation]
    width: eqx.AbstractVar[int]
    depth: eqx.AbstractVar[int]
    frozen: eqx.AbstractVar[tuple[int, ...]]
    key: eqx.AbstractVar[PRNGKeyArray | None]

    @abc.abstractmethod
    def tap_sizes(self) -> tuple[int, ...]:
        """The output size of each linear map, in the order of `trace`."""

    @abc.abstractmethod
    def trace(
        self, x: Float[Array, " d"], taps: tuple[Float[Array, " _"], ...] | None
    ) -> tuple[Float[Array, ""], tuple[Float[Array, " _"], ...]]:
        """`(f(x), (u_1, ..., u_K))` with `taps[k]` added to the output of map k."""

    @abc.abstractmethod
    def map_parameters(self, k: int) -> tuple[Array, ...]:
        """The parameter arrays of linear map `k` (those that `frozen=(k,)` freezes)."""

    @abc.abstractmethod
    def add_outer(self, k: int, left: Float[Array, "out r"],
                  right: Float[Array, "in r"]) -> AbstractLayeredNetwork:
        """The network with `P_k <- P_k + left right^T`: `r` outer products `g (x) u`
        added to linear map `k` (`in` is the size of `u_k` as `trace` returns it).
        A matrix held as a `LowRankMatrix` keeps the update as factors."""

    @abc.abstractmethod
    def factorable(self, k: int) -> Callable[[Any], Any] | None:
        """A `where` function (for `eqx.tree_at`) selecting the dense matrix of map
        `k` that may be held as a `LowRankMatrix`; `None` if the map has none."""

    @abc.abstractmethod
    def infinite_width(self, inner: Any, expect: Callable) -> tuple[np.ndarray, np.ndarray]:
        """The infinite-width layer recursion: `(NNGP, NTK)` from the input inner
        products `inner` (a `Pairs` of `x.x'` and the diagonals) and
        `expect(S) -> (L, D)`, the Gaussian expectations of one layer (see
        `nthdyn._limits`)."""

    @abc.abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments other than `key`."""

    def apply(self, x):
        return self.trace(x, None)[0]

    def smooth(self) -> bool:
        return self.activation.smooth

    def trained_maps(self) -> tuple[int, ...]:
        """The indices of the linear maps that are trained: all but `frozen`.
        The structured kernels sum over these maps only."""
        sizes = type(self).tap_sizes(self)  # not `self.tap_sizes`: see `low_rank_pays`
        return tuple(k for k in range(len(sizes)) if k not in self.frozen)

    def trainable_filter(self):
        """True on the floating-point arrays of the maps that are not frozen."""
        spec = jax.tree_util.tree_map(eqx.is_inexact_array, self)
        for k in self.frozen:
            count = len(self.map_parameters(k))
            spec = eqx.tree_at(lambda net: net.map_parameters(k), spec, replace=(False,) * count)
        return spec

    def remake(self, **changes: Any) -> AbstractLayeredNetwork:
        """The same kind of network with some hyperparameters changed: a fresh
        initialisation from `key` (kept unless changed). A network built from given
        weights has no key: pass one to draw new weights."""
        arguments = {**self.hyperparameters(), "key": self.key}
        unknown = sorted(set(changes) - set(arguments))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no hyperparameter {unknown}; "
                f"it has {sorted(arguments)}."
            )
        if self.key is None and changes.get("key") is None:
            raise ValueError(
                f"remake({', '.join(sorted(changes))}): this {type(self).__name__} was built "
                "from given weights (from_weights), so there is no key to draw new weights "
                f"from. Pass key=... to draw new {type(self).__name__} weights, or build the "
                "new network with from_weights."
            )
        return type(self)(**{**arguments, **changes})

    def config(self) -> dict[str, Any]:
        hyper = self.hyperparameters()
        hyper["activation"] = self.activation.name
        if self.key is None:
            origin = {"weights": "given", "weights_sha256": weights_sha256(self)}
        else:
            origin = {"key_data": np.asarray(jax.random.key_data(self.key)).tolist()}
        return {"class": type(self).__name__, **hyper, **origin}


class LowRankMatrix(eqx.Module):
    """`W0 + A B^T` with the first `used` columns of `A`, `B` filled: a weight matrix
    whose updates are kept as factors (`add_outer` appends columns). Used in place
    of a dense matrix by a network's `trace` (`@`) and by `ntk_structured`."""

    w0: Float[Array, "out in"]
    a: Float[Array, "out capacity"]
    b: Float[Array, "in capacity"]
    used: Array

    @classmethod
    def empty(cls, w0: Array, capacity: int) -> LowRankMatrix:
        return cls(w0, jnp.zeros((w0.shape[0], capacity), w0.dtype),
                   jnp.zeros((w0.shape[1], capacity), w0.dtype), jnp.asarray(0))

    @property
    def shape(self):
        return self.w0.shape

    def __matmul__(self, u):
        return self.w0 @ u + self.a @ (self.b.T @ u)

    def add_outer(self, left: Array, right: Array) -> LowRankMatrix:
        a = jax.lax.dynamic_update_slice(self.a, left.astype(self.a.dtype), (0, self.used))
        b = jax.lax.dynamic_update_slice(self.b, right.astype(self.b.dtype), (0, self.used))
        return LowRankMatrix(self.w0, a, b, self.used + left.shape[1])

    def dense(self) -> Array:
        return self.w0 + self.a @ self.b.T


def add_outer_to(matrix: Any, left: Array, right: Array) -> Any:
    """`matrix + left right^T`, for a dense matrix or a `LowRankMatrix`."""
    if isinstance(matrix, LowRankMatrix):
        return matrix.add_outer(left, right)
    return matrix + (left @ right.T).astype(matrix.dtype)


#: Hold a map's matrix as a `LowRankMatrix` only when its smaller side is at least this
#: many times the columns its updates append (below it a dense update is as fast).
FACTOR_MARGIN = 4


def low_rank(network: Any, capacity: int) -> Any:
    """`network` with every trained factorable matrix as an empty `LowRankMatrix` of
    `capacity` columns (a layered network's `add_outer` then appends factors)."""
    for k in network.trained_maps():
        where = network.factorable(k)
        if where is not None:
            network = eqx.tree_at(where, network, LowRankMatrix.empty(where(network), capacity))
    return network


def low_rank_pays(network: Any, columns: int) -> bool:
    """Whether updates of `columns` outer products are cheaper as factors: a layered
    network with a trained factorable matrix whose smaller side is at least
    `FACTOR_MARGIN * columns` (then a product with `W0 + A B^T` costs about as much as
    with `W0`, while a dense update of `W0` would touch all its entries)."""
    if not isinstance(network, AbstractLayeredNetwork):
        return False
    # Methods through the class: an equinox Module wraps each method it hands out in a
    # pytree (`BoundMethod`, ~35 us), and this runs eagerly on every kernel call.
    cls = type(network)
    sides = [min(where(network).shape) for k in cls.trained_maps(network)
             if (where := cls.factorable(network, k)) is not None]
    return any(side >= FACTOR_MARGIN * columns for side in sides)


def densify(network: Any) -> Any:
    """`network` with every `LowRankMatrix` formed into a dense matrix."""
    return jax.tree_util.tree_map(
        lambda w: w.dense() if isinstance(w, LowRankMatrix) else w, network,
        is_leaf=lambda w: isinstance(w, LowRankMatrix))


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


def check_weight(array: Any, name: str, shape: tuple[int | None, ...]) -> Array:
    """A given weight array: real, finite, of `shape` (`None` entries are free)."""
    try:
        value = np.asarray(array)
    except Exception as error:  # ragged lists and the like
        raise TypeError(f"{name} could not be read as an array: {error}") from None
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise TypeError(f"{name} has dtype {value.dtype}: pass real numbers.")
    expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        raise ValueError(f"{name} has shape {value.shape}; expected {expected}.")
    if value.size == 0:
        raise ValueError(f"{name} has shape {value.shape}: a layer needs at least one unit and "
                         "one input; pass arrays with no zero-length axis.")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} has non-finite entries: pass finite weights.")
    return jnp.asarray(value, dtype=jnp.result_type(float))


def trainable(network: AbstractNetwork):
    """Split a network into its trained parameters and the rest (`eqx.partition`)."""
    return eqx.partition(network, network.trainable_filter())


def parameter_count(network: AbstractNetwork) -> int:
    """The number of trainable parameters `P`."""
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(trainable(network)[0]))

"""Training sets: inputs on the unit sphere or circle and their labels."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import default_float, passed_before, positive_int, remember_passed
from ._network import as_key
from ._network._base import normal_draws

Labels = None | Callable[[Array], Array] | ArrayLike


def _float_array(value: Any, name: str) -> Array:
    return jnp.asarray(float_values(value, name), dtype=jnp.result_type(float))


def float_values(value: Any, name: str) -> np.ndarray:
    """`value` as a NumPy array of real numbers (on the host, also inside a trace)."""
    try:
        array = np.asarray(value)
    except Exception as error:  # e.g. ragged lists
        raise TypeError(f"{name} could not be read as an array: {error}") from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(
            f"{name} has dtype {array.dtype}: pass real numbers (a float array)."
        )
    return array


def check_inputs(X: Any, name: str = "X", *, in_size: int | None = None) -> Array:
    """Validate an input matrix `(n, d)`: finite, real, rows of norm far from zero
    (Huang & Yau, Assumption 2.2: `c < ||x|| <= 1/c`). Under `jit`/`vmap` only
    the shape can be checked."""
    traced = isinstance(X, jax.core.Tracer)
    dtype = default_float()
    ready = not traced and isinstance(X, jax.Array) and X.dtype == dtype  # no copy back
    known = ready and passed_before(X, "inputs")
    values = None if traced or known else float_values(X, name)
    if not ready:
        X = jnp.asarray(X if traced else values, dtype=dtype)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"{name} has shape {X.shape}: expected a non-empty matrix (n, d), one row "
            "per input point. For a single point use x[None, :]."
        )
    if in_size is not None and X.shape[1] != in_size:
        raise ValueError(
            f"{name} has {X.shape[1]} columns but the network takes inputs of size "
            f"{in_size}."
        )
    if traced or known:
        return X
    values = values.astype(np.float64, copy=False)  # checked on the host, in NumPy
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(
            f"{name} has a non-finite value ({float(values[bad[0], bad[1]])}) at row {bad[0]}, "
            f"column {bad[1]}: drop or replace that row before training."
        )
    with np.errstate(over="ignore"):  # huge rows have an infinite norm: far from zero
        norms = np.linalg.norm(values, axis=1)
    if np.any(norms < 1e-3):
        row = int(np.argmin(norms))
        raise ValueError(
            f"{name} row {row} has norm {float(norms[row]):.3g}: inputs must be bounded "
            "away from zero (Huang & Yau, Assumption 2.2). Normalise the rows, e.g. "
            "X / np.linalg.norm(X, axis=1, keepdims=True)."
        )
    remember_passed(X, "inputs")
    return X


class TrainingSet(eqx.Module):
    """Inputs `X` (n, d) and labels `y` (n,), validated.

    The loss is `L = 1/(2n) sum_b (f(x_b) - y_b)^2` (Huang & Yau, Section 1).
    """

    X: Float[Array, "n d"]
    y: Float[Array, " n"]

    def __init__(self, X: ArrayLike, y: ArrayLike):
        X = check_inputs(X, "X")
        y = _float_array(y, "y")
        if y.shape != (X.shape[0],):
            raise ValueError(
                f"y has shape {y.shape} but X has {X.shape[0]} rows: pass one label "
                f"per input, shape ({X.shape[0]},)."
            )
        if not bool(jnp.all(jnp.isfinite(y))):
            index = int(jnp.argmin(jnp.isfinite(y)))
            raise ValueError(f"y has a non-finite label ({float(y[index])}) at index {index}: "
                             "drop or replace that point before training.")
        self.X = X
        self.y = y

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def as_training_set(data: Any) -> TrainingSet:
    """A `TrainingSet`, or an `(X, y)` pair made into one."""
    if isinstance(data, tuple) and len(data) == 2:
        data = TrainingSet(*data)
    if not isinstance(data, TrainingSet):
        raise TypeError(
            f"data={type(data).__name__}: pass a TrainingSet(X, y), an (X, y) pair, or "
            "the result of nthdyn.sphere_data(...)."
        )
    return data


def as_training_set_for(data: Any, in_size: int, whose: str = "the network") -> TrainingSet:
    """`as_training_set(data)`, whose inputs must have `in_size` entries (the network's)."""
    data = as_training_set(data)
    if data.d != in_size:
        raise ValueError(
            f"data has inputs of dimension {data.d} but {whose} takes in_size={in_size}: "
            f"build the network with in_size={data.d}."
        )
    return data


def product_teacher(X: Float[Array, "n d"]) -> Float[Array, " n"]:
    """Jacot's regression target `f*(x) = x_1 x_2` (paper 003, Section 6)."""
    return X[:, 0] * X[:, 1]


def _labels(labels: Labels, X: Array, key: Array) -> Array:
    if labels is None:
        return jax.random.normal(key, (X.shape[0],), X.dtype)
    if callable(labels):
        return jnp.asarray(labels(X))
    return labels


def sphere_data(n: int, d: int, *, key: Any, labels: Labels = None) -> TrainingSet:
    """`n` points uniform on the unit sphere in `R^d`.

    `labels`: `None` for independent `N(0, 1)` labels, a function of `X` (a
    teacher such as `product_teacher`), or an array of `n` labels.
    """
    n = positive_int(n, "n")
    d = positive_int(d, "d")
    X, normal_labels = normal_draws(as_key(key), ((n, d), (n,)), (1.0, 1.0),
                                    jnp.result_type(float))
    X = X / jnp.linalg.norm(X, axis=1, keepdims=True)
    return TrainingSet(X, normal_labels if labels is None else _labels(labels, X, None))


def circle_data(
    n: int, *, key: Any = 0, spacing: str = "even", labels: Labels = None
) -> TrainingSet:
    """`n` points on the unit circle in `R^2`: at angles `2 pi k / n`
    (`spacing="even"`) or at uniform random angles (`spacing="random"`)."""
    n = positive_int(n, "n")
    key_x, key_y = jax.random.split(as_key(key))
    if spacing == "even":
        angles = 2 * math.pi * jnp.arange(n, dtype=jnp.result_type(float)) / n
    elif spacing == "random":
        angles = jax.random.uniform(key_x, (n,), jnp.result_type(float), 0.0, 2 * math.pi)
    else:
        raise ValueError(f"spacing={spacing!r}: use 'even' or 'random'.")
    X = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return TrainingSet(X, _labels(labels, X, key_y))


#: Pixel values of scikit-learn's digits run from 0 to 16.
DIGITS_PIXEL_MAX = 16.0


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), as (images, digits):
    read from the file that `sklearn.datasets.load_digits` reads, without importing
    scikit-learn (1.2 s); through `load_digits` where that file is not where it was."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ImportError(
            "digits_data needs scikit-learn (its digits ship inside the package; nothing "
            "is downloaded): pip install scikit-learn"
        )
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",")  # 64 pixels, then the digit
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.int64)


def _digit_classes(classes: Any) -> tuple[int, ...]:
    try:
        values = tuple(classes)
    except TypeError:
        values = None
    if (values is None or len(values) < 2 or len(set(values)) != len(values) or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 9
            for c in values)):
        raise ValueError(
            f"classes={classes!r}: pass two or more distinct digits from 0 to 9, e.g. "
            "classes=(3, 8) or classes=range(10)."
        )
    return tuple(int(c) for c in values)


def digits_data(
    n: int, *, key: Any, classes: Any = tuple(range(10)), labels: Any = "standardized"
) -> TrainingSet:
    """`n` real images: scikit-learn's handwritten digits (8x8 pixels, `d = 64`,
    1797 images bundled with the package, no download), on the unit sphere.

    The images of the listed `classes` are the pool; `key` draws `n` of them
    without replacement (a JAX permutation of the pool: the same key gives the
    same images in the same order). Each image `p` (pixels in `[0, 16]`) becomes

        x = (p / 16 - mean) / ||p / 16 - mean||,

    where `mean` is the mean image of the whole pool (so the result does not
    depend on which images are drawn): centred, then on the unit sphere as
    Assumption 2.2 asks (`||x|| = 1`). Centring removes the common positive
    offset of the pixels, which would otherwise make every pair of inputs
    strongly aligned.

    `labels`, a regression target from the digit `k` of each image:

    - `"standardized"` (the default): `(k - mu) / sigma` with `mu`, `sigma` the mean
      and standard deviation of the listed classes (each class counted once):
      for two classes, `-1` for the first and `+1` for the second;
    - `"digit"`: `k` itself, as a float;
    - a function of the `(n,)` integer array of digits, returning `n` labels.
    """
    n = positive_int(n, "n")
    classes = _digit_classes(classes)
    if not (labels in ("standardized", "digit") or callable(labels)):
        raise ValueError(
            f"labels={labels!r}: use 'standardized', 'digit', or a function of the (n,) "
            "array of digits returning n labels."
        )
    images, digits = _load_digits()
    pool = np.flatnonzero(np.isin(digits, classes))
    if n > pool.size:
        raise ValueError(
            f"n={n}: the digits data set has only {pool.size} images of classes {classes}; "
            f"pass n <= {pool.size} or more classes."
        )
    pixels = images[pool] / DIGITS_PIXEL_MAX
    pixels = pixels - pixels.mean(axis=0)
    chosen = np.asarray(jax.random.permutation(as_key(key), pool.size))[:n]
    X = pixels[chosen] / np.linalg.norm(pixels[chosen], axis=1, keepdims=True)
    k = digits[pool][chosen]
    if labels == "standardized":
        values = np.asarray(classes, np.float64)
        y = (k - values.mean()) / values.std()
    elif labels == "digit":
        y = k.astype(np.float64)
    else:
        y = labels(k)
    return TrainingSet(X, y)


def sigmoid_teacher_data(n: int, n_test: int, *, key: Any = 2020):
    """The teacher of Fang, Dong & Zhang (paper 002) Fig. 6 and its data: `F4(x) =
    sum_{i=1..4} sigmoid(theta_i . x)` (a `TwoLayer` with `alpha = 1`, `u_i = 1`,
    `theta_i ~ N(0, I_2)`), `n` training inputs `x ~ N(0, 100^2 I_2)` labelled
    `F4(x) + N(0, 0.1^2)`, and `n_test` test inputs from the same law.

    **Returns:** `(teacher, TrainingSet, X_test)`; every draw comes from `key` (an int
    seed or a JAX key), so the same key gives the same teacher and data.
    """
    from ._network import TwoLayer

    n = positive_int(n, "n")
    n_test = positive_int(n_test, "n_test")
    theta, X, noise, X_test = _teacher_draws(as_key(key), n, n_test)
    teacher = TwoLayer.from_weights(theta, jnp.ones(4), alpha=1.0, activation="sigmoid")
    y = eqx.filter_jit(lambda net, x: net(x))(teacher, 100.0 * X) + 0.1 * noise
    return teacher, TrainingSet(100.0 * X, y), 100.0 * X_test


@eqx.filter_jit
def _teacher_draws(key, n, n_test):
    """The standard normal draws of `sigmoid_teacher_data`, in one compiled program."""
    kt, kx, ke, ks = jax.random.split(key, 4)
    return (jax.random.normal(kt, (4, 2)), jax.random.normal(kx, (n, 2)),
            jax.random.normal(ke, (n,)), jax.random.normal(ks, (n_test, 2)))

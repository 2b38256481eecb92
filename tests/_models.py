"""Helpers shared by the tests (not a test module)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import nthdyn as nd

#: The save times of the shared `flow_solution` fixture: every 0.01 on [0, 1].
FLOW_TIMES = np.linspace(0.0, 1.0, 101)


def sphere(n, d, seed):
    """`n` points on the unit sphere in R^d, as a float64 numpy array."""
    X = np.random.default_rng(seed).normal(size=(n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def features(x, xp):
    """Fixed features phi(x) of a 3-d input: 9 of them, none trainable."""
    return xp.concatenate([x, xp.sin(2.0 * x), x[:1] * x[1:], xp.ones(1)])


class LinearModel(nd.AbstractNetwork):
    """f(x) = w . phi(x): linear in its parameters w, so its NTK is phi phi^T
    at every parameter value."""

    w: jax.Array
    in_size: int = eqx.field(static=True)

    def __init__(self, w):
        self.w = jnp.asarray(w)
        self.in_size = 3

    def apply(self, x):
        return self.w @ features(x, jnp)


def linear_model(seed=0):
    return LinearModel(jax.random.normal(jax.random.key(seed), (9,), jnp.float64))

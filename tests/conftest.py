"""Shared test set-up: float64 on, a key fixture, tiny problems."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)

import nthdyn as nd  # noqa: E402


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def small_data():
    """6 points on the unit sphere in R^3 with N(0, 1) labels."""
    return nd.sphere_data(n=6, d=3, key=jax.random.key(11))

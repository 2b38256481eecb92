"""`digits_data`: scikit-learn's 8x8 digits on the unit sphere, with regression labels.

Every image is checked against an independent reconstruction from scikit-learn's raw
pixels (centre by the pool's mean image, scale to norm 1)."""

import sys

import jax
import numpy as np
import pytest

import nthdyn as nd

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402


def _pool(classes):
    """The pool's images, preprocessed here by hand, and their digits."""
    bunch = load_digits()
    keep = np.isin(bunch.target, classes)
    pixels = bunch.data[keep] / 16.0
    centred = pixels - pixels.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True), bunch.target[keep]


def _match(X, pool):
    """Index in the pool of each row of X (its nearest image: the same one, cosine 1)."""
    cosines = np.asarray(X) @ pool.T
    index = cosines.argmax(axis=1)
    np.testing.assert_allclose(cosines[np.arange(len(index)), index], 1.0, rtol=0, atol=1e-12)
    return index


def test_shapes_dtype_and_unit_sphere():
    data = nd.digits_data(128, key=0)
    assert isinstance(data, nd.TrainingSet)
    assert data.X.shape == (128, 64) and data.y.shape == (128,)
    assert data.X.dtype == np.float64 and data.y.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=1), 1.0, rtol=0, atol=1e-14)


def test_images_are_the_centred_normalised_pixels_drawn_without_replacement():
    classes = (3, 8)
    pool, digits = _pool(classes)
    data = nd.digits_data(pool.shape[0], key=5, classes=classes)  # the whole pool
    index = _match(data.X, pool)
    assert sorted(index) == list(range(pool.shape[0]))  # a permutation: no image twice
    np.testing.assert_array_equal(data.y, np.where(digits[index] == 3, -1.0, 1.0))
    # centred: the mean of the unnormalised pool images is zero, so the mean direction is
    # far from every image (the raw pixels all lie in the positive orthant)
    raw = load_digits().data
    raw = raw[np.isin(load_digits().target, classes)]
    raw_cosines = (raw / np.linalg.norm(raw, axis=1, keepdims=True)) @ (raw / np.linalg.norm(raw, axis=1, keepdims=True)).T
    assert raw_cosines.min() > 0.0  # raw pixels: every pair aligned
    assert np.asarray(data.X @ data.X.T).min() < -0.3  # after centring: not


def test_labels():
    pool, digits = _pool(tuple(range(10)))
    data = nd.digits_data(64, key=1)
    k = digits[_match(data.X, pool)]
    np.testing.assert_allclose(data.y, (k - 4.5) / np.sqrt(8.25), rtol=0, atol=1e-14)
    as_digit = nd.digits_data(64, key=1, labels="digit")
    np.testing.assert_array_equal(as_digit.y, k.astype(float))
    np.testing.assert_array_equal(as_digit.X, data.X)
    odd = nd.digits_data(64, key=1, labels=lambda digit: digit % 2)
    np.testing.assert_array_equal(odd.y, (k % 2).astype(float))
    three = nd.digits_data(30, key=2, classes=[1, 4, 7])
    pool3, digits3 = _pool((1, 4, 7))  # centred by the mean of these three classes
    k3 = digits3[_match(three.X, pool3)]
    assert set(k3) <= {1, 4, 7}
    np.testing.assert_allclose(three.y, (k3 - 4.0) / np.sqrt(6.0), rtol=0, atol=1e-14)


def test_deterministic_in_the_key():
    a = nd.digits_data(40, key=3)
    b = nd.digits_data(40, key=jax.random.key(3))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    c = nd.digits_data(40, key=4)
    assert not np.array_equal(a.X, c.X)
    # a larger draw with the same key starts with the same images
    np.testing.assert_array_equal(nd.digits_data(60, key=3).X[:40], a.X)


def test_the_file_read_is_load_digits():
    from nthdyn._data import _load_digits

    images, digits = _load_digits()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.data)
    np.testing.assert_array_equal(digits, bunch.target)
    assert images.dtype == np.float64 and digits.dtype == np.int64


def test_without_the_file_load_digits_is_called(monkeypatch, tmp_path):
    import importlib.util
    import types

    from nthdyn._data import _load_digits

    elsewhere = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: elsewhere)
    images, digits = _load_digits()
    np.testing.assert_array_equal(images, load_digits().data)
    np.testing.assert_array_equal(digits, load_digits().target)


def test_missing_scikit_learn_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # not installed: find_spec is None
    with pytest.raises(ImportError, match=r"pip install scikit-learn"):
        nd.digits_data(4, key=0)

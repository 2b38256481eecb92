"""Factored kernel directions: `grad f_b` taken as rank-one terms `g_k(x_b) (x) u_k(x_b)` on
every linear map gives the same K(3), K(4), Taylor kernels and contractions as the
parameter-sized directions (which tests/test_hierarchy.py checks against plain autodiff)."""

import jax
import numpy as np
import pytest

import nthdyn as nd
from nthdyn._kernels._hierarchy import direction_batches, factoring_chosen
from nthdyn._kernels._ntk import ntk_jacobian, ntk_structured

NETWORKS = {
    "MLP-H1": nd.MLP(3, 10, 1, "tanh", key=1),
    "MLP-H2": nd.MLP(3, 12, 2, "softplus", key=2),
    "MLP-H3-middle-frozen": nd.MLP(3, 9, 3, "tanh", key=3, frozen=(1,)),
    "Jacot-H2": nd.JacotMLP(3, 10, 2, "erf", key=4),
    "TwoLayer": nd.TwoLayer(3, 11, alpha=2.0, activation="tanh", key=5),
}


@pytest.fixture(scope="module")
def points():
    X = nd.sphere_data(n=4, d=3, key=jax.random.key(0)).X
    test = nd.sphere_data(n=2, d=3, key=jax.random.key(7)).X
    c = np.random.default_rng(0).normal(size=(2, 4))
    return X, test, c


# every network and every kind of kernel once (each pair is two compilations)
CASES = {
    "MLP-H1": ("hierarchy_kernel", 3, {"X_first": True}),
    "MLP-H2": ("hierarchy_kernel", 4, {}),
    "MLP-H3-middle-frozen": ("taylor_kernel", 4, {"X_first": True}),
    "Jacot-H2": ("hierarchy_contraction", 4, {}),
    "TwoLayer": ("taylor_contraction", 4, {"X_first": True}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_factored_directions_give_the_same_kernels(name, points):
    (X, test, c), (kernel, order, options) = points, CASES[name]
    options = {"X_first": test} if options else {}
    last = order if kernel.endswith("kernel") else list(c[: order - 2])
    results = [np.asarray(getattr(nd, kernel)(NETWORKS[name], X, last, factored=factored,
                                              **options)) for factored in (False, True)]
    scale = np.abs(results[0]).max()
    assert scale > 1e-3  # not a kernel that vanishes
    np.testing.assert_allclose(results[1], results[0], rtol=0, atol=1e-13 * scale)


def test_a_factored_kernel_keeps_its_symmetry_and_differs_from_taylor(points):
    X = points[0]
    network = NETWORKS["MLP-H2"]
    K3 = np.asarray(nd.hierarchy_kernel(network, X, 3, factored=True))
    np.testing.assert_allclose(K3, K3.transpose(1, 0, 2), rtol=0, atol=1e-15 * np.abs(K3).max())
    K4 = np.asarray(nd.hierarchy_kernel(network, X, 4, factored=True))
    calK4 = np.asarray(nd.taylor_kernel(network, X, 4, factored=True))
    # calK(4) is symmetric in its slots 3, 4 and K(4) is not (the moving field, eq. (10))
    np.testing.assert_allclose(calK4, calK4.transpose(0, 1, 3, 2), rtol=0,
                               atol=1e-14 * np.abs(calK4).max())
    assert np.abs(K4 - K4.transpose(0, 1, 3, 2)).max() > 1e-6 * np.abs(K4).max()


def test_factored_directions_are_chosen_by_shape():
    wide, narrow = nd.MLP(8, 4 * 12, 2, key=0), nd.MLP(8, 4 * 12 - 1, 2, key=0)
    # K(4) on n = 6 points: two levels of 6 directions, 12 columns per map
    assert factoring_chosen(wide, ntk_structured, 12, None)
    assert not factoring_chosen(narrow, ntk_structured, 12, None)
    assert not factoring_chosen(nd.MLP(8, 4096, 1, key=0), ntk_structured, 12, None)  # m x 8
    assert not factoring_chosen(wide, ntk_jacobian, 12, None)  # the plain-JAX reference
    assert factoring_chosen(narrow, ntk_structured, 12, True)
    assert not factoring_chosen(wide, ntk_structured, 12, False)


def test_directions_are_batched_within_the_memory_budget():
    small, wide = nd.MLP(8, 64, 2, key=0), nd.MLP(8, 2**20, 1, key=0)
    assert direction_batches(small, 12, 6, 2) == (6, 6)  # all at once
    assert direction_batches(wide, 12, 6, 2) == (1, 1)  # one at a time
    middle = direction_batches(nd.MLP(8, 4096, 2, key=0), 64, 32, 2)
    assert middle[0] < 32 and middle[1] == 1


def test_factored_is_refused_where_it_cannot_apply(points):
    X = points[0]
    with pytest.raises(TypeError, match=r"factored='yes': pass None \(automatic, by shape\), "
                                        "True or False"):
        nd.hierarchy_kernel(NETWORKS["MLP-H1"], X, 3, factored="yes")
    with pytest.raises(ValueError, match=r"factored=True: factored directions need a layered "
                                         r"network .* and method='structured' \(got MLP with "
                                         r"the jacobian base\)"):
        nd.hierarchy_contraction(NETWORKS["MLP-H1"], X, [X[:, 0]], method="jacobian",
                                 factored=True)

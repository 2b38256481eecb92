"""Frozen linear maps: training a subset of the parameters changes every kernel
(structured, Jacobian, limiting) and every solver consistently."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nthdyn as nd
from nthdyn._network import trainable

from _models import sphere

structured = eqx.filter_jit(nd.ntk_structured)
jacobian = eqx.filter_jit(nd.ntk_jacobian)


@pytest.mark.parametrize("network", [
    nd.MLP(3, 16, 2, "tanh", frozen=(0, 2), key=1),
    nd.JacotMLP(3, 16, 2, "relu", beta=0.4, frozen=(1,), key=2),
])
def test_structured_ntk_equals_jacobian_ntk(network):
    X, X2 = sphere(4, 3, seed=1), sphere(2, 3, seed=2)
    X2 = X2 if isinstance(network, nd.JacotMLP) else None  # both code paths, one compile each
    np.testing.assert_allclose(structured(network, X, X2), jacobian(network, X, X2),
                               rtol=1e-12, atol=1e-14)
    full = network.remake(frozen=())
    assert np.all(np.diag(nd.ntk(network, X)) < np.diag(nd.ntk(full, X)))


def test_trainable_parameters_and_hyperparameters():
    net = nd.MLP(3, 16, 2, "tanh", frozen=(2, 0), key=0)
    assert net.frozen == (0, 2) and net.trained_maps() == (1,)
    assert nd.parameter_count(net) == 16 * 16
    params, static = trainable(net)
    assert params.weights[0] is None and params.readout is None and params.weights[1] is not None
    assert net.remake(key=1).frozen == (0, 2) and tuple(net.config()["frozen"]) == (0, 2)
    jacot = nd.JacotMLP(3, 16, 2, frozen=(0, 1), key=0)
    assert nd.parameter_count(jacot) == 16 + 1  # output weights and bias


def test_gradient_descent_dense_and_low_rank_leave_frozen_maps_alone():
    """`solve` (dense updates) and `low_rank_descent` (updates kept as factors) are the
    same iteration, and neither touches a frozen map."""
    data = nd.sphere_data(n=4, d=3, key=3)
    test = sphere(2, 3, seed=6)
    net = nd.JacotMLP(3, 16, 2, "tanh", frozen=(0, 2), key=4)
    problem = nd.GradientDescentProblem(net, data, steps=5, learning_rate=0.7, test=test)
    dense = nd.solve(problem, saveat=[0, 2, 5])
    low_rank = nd.low_rank_descent(problem, saveat=[0, 2, 5], low_rank=True, save_ntk=True)
    for k in (0, 2):
        for before, after, other in zip(net.map_parameters(k), dense.network.map_parameters(k),
                                        low_rank.network.map_parameters(k)):
            assert np.array_equal(before, after) and np.array_equal(before, other)
    assert not np.array_equal(net.weights[1], dense.network.weights[1])
    np.testing.assert_allclose(low_rank.f_test, dense.f_test, rtol=0, atol=1e-13)
    np.testing.assert_allclose(low_rank.loss, dense.loss, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(trainable(low_rank.network)[0]),
                    jax.tree_util.tree_leaves(trainable(dense.network)[0])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    np.testing.assert_allclose(low_rank.ntk[-1], nd.ntk(dense.network, data.X), atol=1e-12)


def test_first_layer_only_network_gives_the_lecture_kernel():
    """Lecture notes (paper 004): f(x) = 1/sqrt(m) sum_r a_r psi(w_r.x), a_r = +-1 frozen,
    w_r ~ N(0, I). Its NTK is x_i.x_j 1/m sum_r psi'(w_r.x_i) psi'(w_r.x_j) and its limit
    H*_ij = x_i.x_j E_w[psi'(w.x_i) psi'(w.x_j)]."""
    X = sphere(4, 3, seed=3) * np.array([[1.0], [0.7], [1.3], [1.0]])
    m = 16
    net = nd.MLP(3, m, 1, "tanh", frozen=(1,), key=8)
    net = eqx.tree_at(lambda n: n.readout, net, jnp.sign(net.readout))  # a_r = +-1, P = 1/2 each
    W = np.asarray(net.weights[0])
    slopes = 1 - np.tanh(X @ W.T) ** 2  # psi'(w_r.x_i), (n, m)
    lecture = (X @ X.T) * (slopes @ slopes.T) / m
    np.testing.assert_allclose(nd.ntk(net, X), lecture, rtol=1e-13)
    np.testing.assert_allclose(jacobian(net, X), lecture, rtol=1e-13)
    # the limit, against an independent Monte Carlo estimate of H* over w ~ N(0, I_3)
    H = nd.limiting_kernels(net, X).ntk
    w = np.random.default_rng(0).standard_normal((200_000, 3))
    s = 1 - np.tanh(X @ w.T) ** 2  # (n, samples)
    products = s[:, None, :] * s[None, :, :] * (X @ X.T)[:, :, None]
    mean = products.mean(axis=-1)
    stderr = products.std(axis=-1, ddof=1) / np.sqrt(w.shape[0])
    assert np.max(np.abs(mean - H) / stderr) < 3.0
    # with N(0, 1) readout weights (E a^2 = 1) the limit is the same kernel
    np.testing.assert_allclose(nd.limiting_kernels(nd.MLP(3, 1, 1, "tanh", frozen=(1,), key=0), X).ntk, H)


def test_nice_errors():
    with pytest.raises(ValueError, match=r"frozen=\(3,\): pass a tuple of linear-map indices in 0..2"):
        nd.MLP(3, 16, 2, frozen=(3,), key=0)
    with pytest.raises(ValueError, match=r"frozen=\(0, 1\) freezes all 2 linear maps"):
        nd.JacotMLP(3, 16, 1, frozen=(0, 1), key=0)
    with pytest.raises(ValueError, match="frozen='a'"):
        nd.MLP(3, 16, 1, frozen="a", key=0)
    with pytest.raises(TypeError, match="low-rank updates are implemented for"):
        nd.low_rank_descent(nd.GradientDescentProblem(_Tiny(), nd.sphere_data(3, 2, key=0), 1, 0.1))


class _Tiny(nd.AbstractNetwork):
    w: jax.Array
    in_size: int = 2

    def __init__(self):
        self.w = jnp.ones(2)

    def apply(self, x):
        return jnp.tanh(self.w @ x)

"""Networks: forward passes against hand-written numpy, activations, remake,
parameter counts and initialisation statistics."""

import math

import equinox as eqx
import jax
import numpy as np
import pytest
import scipy.special

import nthdyn as nd
import _models


def _inputs(n=5, d=3, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _mlp_numpy(net, X, sigma):
    """Huang & Yau eq. (1)-(2): x^(l) = sigma(W^(l) x^(l-1)) / sqrt(m), f = a . x^(H)."""
    m = net.width
    out = []
    for x in X:
        u = x
        for W in net.weights:
            u = sigma(np.asarray(W) @ u) / math.sqrt(m)
        out.append(np.asarray(net.readout) @ u)
    return np.array(out)


def _jacot_numpy(net, X, sigma):
    """Jacot et al.: alpha~ = W alpha / sqrt(n_l) + beta b, alpha = sigma(alpha~),
    linear output layer."""
    out = []
    L = len(net.weights)
    for x in X:
        alpha = x
        for k, (W, b) in enumerate(zip(net.weights, net.biases)):
            W, b = np.asarray(W), np.asarray(b)
            pre = W @ alpha / math.sqrt(W.shape[1]) + net.beta * b
            alpha = pre if k == L - 1 else sigma(pre)
        assert alpha.shape == (1,)
        out.append(alpha[0])
    return np.array(out)


def _close(a, b, rtol=1e-13):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert a.dtype == np.float64
    assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b)), np.max(np.abs(a - b))


@pytest.mark.parametrize("depth", [1, 3])
def test_mlp_forward_matches_numpy_eq_1_2(depth):
    net = nd.MLP(in_size=3, width=16, depth=depth, activation="tanh", sw=1.3, sa=0.7,
                 key=jax.random.key(depth))
    X = _inputs()
    assert len(net.weights) == depth
    _close(net(X), _mlp_numpy(net, X, np.tanh))


@pytest.mark.parametrize("activation,sigma", [
    ("tanh", np.tanh),
    ("relu", lambda x: np.maximum(x, 0.0)),
])
def test_jacot_forward_matches_numpy(activation, sigma):
    net = nd.JacotMLP(in_size=3, width=16, depth=2, activation=activation, beta=0.3,
                      key=jax.random.key(5))
    X = _inputs()
    assert len(net.weights) == 3 and len(net.biases) == 3
    assert net.weights[0].shape == (16, 3) and net.weights[-1].shape == (1, 16)
    _close(net(X), _jacot_numpy(net, X, sigma))


@pytest.mark.parametrize("make", [
    lambda: nd.MLP(3, 16, 2, "softplus", key=jax.random.key(1)),
    lambda: nd.JacotMLP(3, 16, 2, "tanh", key=jax.random.key(2)),
])
def test_batch_equals_loop_over_single_inputs(make):
    net = make()
    X = _inputs(n=6)
    batch = np.asarray(net(X))
    single = np.array([float(net(x)) for x in X])
    assert batch.shape == (6,)
    assert np.asarray(net(X[0])).shape == ()
    np.testing.assert_allclose(batch, single, rtol=1e-14, atol=1e-15)


def _gelu(x):
    return x * 0.5 * (1.0 + scipy.special.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("activation,formula,smooth", [
    (nd.Tanh(), np.tanh, True),
    (nd.Sigmoid(), lambda x: 1.0 / (1.0 + np.exp(-x)), True),
    (nd.Erf(), scipy.special.erf, True),
    (nd.Softplus(), lambda x: np.log1p(np.exp(x)), True),
    (nd.Softplus(sharpness=4.0), lambda x: np.log1p(np.exp(4.0 * x)) / 4.0, True),
    (nd.Gelu(), _gelu, True),
    (nd.Relu(), lambda x: np.maximum(x, 0.0), False),
    (nd.Identity(), lambda x: x, True),
])
def test_activation_formula_and_smoothness(activation, formula, smooth):
    x = np.linspace(-4.0, 4.0, 81)
    np.testing.assert_allclose(np.asarray(activation(x)), formula(x), rtol=1e-13, atol=1e-15)
    assert activation.smooth is smooth


@pytest.mark.parametrize("name,cls", [
    ("tanh", nd.Tanh), ("sigmoid", nd.Sigmoid), ("erf", nd.Erf), ("softplus", nd.Softplus),
    ("gelu", nd.Gelu), ("relu", nd.Relu), ("identity", nd.Identity),
])
def test_activation_by_name(name, cls):
    net = nd.MLP(3, 16, activation=name.upper(), key=jax.random.key(0))
    assert type(net.activation) is cls
    assert net.config()["activation"].startswith(name)


def test_softplus_sharpness_in_network():
    net = nd.MLP(3, 16, 1, nd.Softplus(sharpness=4.0), key=jax.random.key(3))
    X = _inputs()
    _close(net(X), _mlp_numpy(net, X, lambda h: np.logaddexp(0.0, 4.0 * h) / 4.0))
    assert net.config()["activation"] == "softplus(sharpness=4)"


def test_remake_changes_width_keeps_key_and_other_hyperparameters():
    key = jax.random.key(7)
    net = nd.MLP(3, 16, depth=2, activation="erf", sw=0.5, sa=2.0, key=key)
    wider = net.remake(width=32)
    assert wider.width == 32
    assert [w.shape for w in wider.weights] == [(32, 3), (32, 32)]
    assert wider.readout.shape == (32,)
    assert np.array_equal(jax.random.key_data(wider.key), jax.random.key_data(key))
    assert (wider.depth, wider.sw, wider.sa, wider.in_size) == (2, 0.5, 2.0, 3)
    assert isinstance(wider.activation, nd.Erf)
    # the original is untouched, and remaking with no change re-creates it exactly
    assert net.width == 16 and net.weights[0].shape == (16, 3)
    same = wider.remake(width=16)
    for a, b in zip(jax.tree_util.tree_leaves(same.weights), jax.tree_util.tree_leaves(net.weights)):
        assert np.array_equal(a, b)
    # a new key gives new parameters of the same shape
    other = net.remake(key=jax.random.key(8))
    assert other.weights[0].shape == (16, 3)
    assert not np.array_equal(other.weights[0], net.weights[0])


def test_jacot_remake_depth():
    net = nd.JacotMLP(3, 16, depth=1, beta=0.2, key=jax.random.key(0))
    deeper = net.remake(depth=3)
    assert len(deeper.weights) == 4 and deeper.beta == 0.2
    assert [w.shape for w in deeper.weights] == [(16, 3), (16, 16), (16, 16), (1, 16)]


@pytest.mark.parametrize("d,m,H", [(3, 16, 1), (3, 16, 3), (5, 16, 2)])
def test_parameter_count_mlp(d, m, H):
    net = nd.MLP(d, m, H, key=jax.random.key(0))
    assert nd.parameter_count(net) == d * m + (H - 1) * m * m + m


@pytest.mark.parametrize("d,m,H", [(3, 16, 1), (5, 16, 2)])
def test_parameter_count_jacot(d, m, H):
    net = nd.JacotMLP(d, m, H, key=jax.random.key(0))
    # weights and biases of H hidden layers plus the linear output layer
    expected = (d + 1) * m + (H - 1) * (m + 1) * m + (m + 1)
    assert nd.parameter_count(net) == expected


def test_mlp_initialisation_statistics():
    sw, sa = 0.5, 2.0
    nets = [nd.MLP(in_size=4, width=512, depth=2, sw=sw, sa=sa, key=jax.random.key(40 + i))
            for i in range(8)]
    for W, n_in in zip(nets[0].weights, (4, 512)):
        W = np.asarray(W)
        assert W.shape == (512, n_in) and W.dtype == np.float64
        assert abs(W.std() / sw - 1) < 0.05
        assert abs(W.mean()) < 0.05 * sw
    a = np.concatenate([np.asarray(net.readout) for net in nets])  # 4096 draws
    assert abs(a.std() / sa - 1) < 0.05
    assert abs(a.mean()) < 0.05 * sa
    # different keys and different layers are independent draws
    W2 = np.asarray(nets[0].weights[1])
    assert abs(np.corrcoef(W2[:, :4].ravel(), np.asarray(nets[0].weights[0]).ravel())[0, 1]) < 0.1
    assert abs(np.corrcoef(nets[0].readout, nets[1].readout)[0, 1]) < 0.2


def test_jacot_initialisation_standard_normal():
    net = nd.JacotMLP(in_size=4, width=512, depth=2, key=jax.random.key(4))
    W = np.asarray(net.weights[1])
    assert abs(W.std() - 1) < 0.05 and abs(W.mean()) < 0.05
    b = np.concatenate([np.asarray(b) for b in net.biases])  # 1025 draws
    assert abs(b.std() - 1) < 0.1 and abs(b.mean()) < 0.1


def test_integer_seed_equals_key():
    a = nd.MLP(3, 16, key=5)
    b = nd.MLP(3, 16, key=jax.random.key(5))
    assert np.array_equal(a.weights[0], b.weights[0])
    assert np.array_equal(a.readout, b.readout)


# ----------------------------------------------------------------- networks from weights


def test_mlp_from_weights_round_trip_and_hand_ntk():
    """Weights in: the same outputs and the K2 of the hand formula eq. (7)."""
    rng = np.random.default_rng(0)
    d, m = 3, 5
    W1, W2, a = rng.normal(size=(m, d)), rng.normal(size=(m, m)), rng.normal(size=m)
    net = nd.MLP.from_weights([W1, W2], a, activation="tanh")
    assert (net.in_size, net.width, net.depth, net.key) == (d, m, 2, None)
    X = _models.sphere(4, d, 1)
    # hand formula: x1 = tanh(W1 x)/sqrt(m), x2 = tanh(W2 x1)/sqrt(m), f = a.x2
    h1 = X @ W1.T
    x1 = np.tanh(h1) / np.sqrt(m)
    h2 = x1 @ W2.T
    x2 = np.tanh(h2) / np.sqrt(m)
    np.testing.assert_allclose(net(X), x2 @ a, rtol=0, atol=1e-14)
    g2 = (1 - np.tanh(h2) ** 2) * a / np.sqrt(m)  # df/dh2
    g1 = (1 - np.tanh(h1) ** 2) * (g2 @ W2) / np.sqrt(m)  # df/dh1
    K = x2 @ x2.T + (g2 @ g2.T) * (x1 @ x1.T) + (g1 @ g1.T) * (X @ X.T)
    np.testing.assert_allclose(nd.ntk(net, X), K, rtol=0, atol=1e-13)
    same = nd.MLP.from_weights([W1, W2], a)
    assert net.config() == same.config()
    assert net.config()["weights"] == "given" and len(net.config()["weights_sha256"]) == 64
    other = nd.MLP.from_weights([W1, W2 + 1e-12], a)
    assert other.config()["weights_sha256"] != net.config()["weights_sha256"]


def test_jacot_from_weights_equals_the_keyed_network():
    keyed = nd.JacotMLP(3, 6, 2, key=4)
    given = nd.JacotMLP.from_weights(keyed.weights, keyed.biases, activation="relu", beta=keyed.beta)
    X = _models.sphere(5, 3, 2)
    np.testing.assert_array_equal(given(X), keyed(X))
    np.testing.assert_array_equal(nd.ntk(given, X), nd.ntk(keyed, X))
    assert "key_data" not in given.config() and "key_data" in keyed.config()


def test_from_weights_errors_and_remake():
    rng = np.random.default_rng(1)
    W1, a = rng.normal(size=(5, 3)), rng.normal(size=5)
    with pytest.raises(ValueError, match=r"weights\[1\] has shape \(4, 5\); expected \(5, 5\)"):
        nd.MLP.from_weights([W1, rng.normal(size=(4, 5))], a)
    with pytest.raises(ValueError, match=r"readout has shape \(4,\); expected \(5\)"):
        nd.MLP.from_weights([W1], a[:4])
    with pytest.raises(ValueError, match="readout has non-finite entries"):
        nd.MLP.from_weights([W1], np.full(5, np.nan))
    with pytest.raises(TypeError, match="weights: pass a non-empty sequence of matrices"):
        nd.MLP.from_weights(W1, a)
    with pytest.raises(ValueError, match=r"weights has 2 matrices but biases has 1"):
        nd.JacotMLP.from_weights([W1, rng.normal(size=(1, 5))], [np.zeros(5)])
    net = nd.MLP.from_weights([W1], a)
    with pytest.raises(ValueError, match="built from given weights.*Pass key="):
        net.remake(width=8)
    drawn = net.remake(width=8, key=2)  # a key draws new weights, on purpose
    assert drawn.width == 8 and drawn.key is not None
    data = nd.sphere_data(4, 3, key=0)
    problem = nd.GradientFlowProblem(net, data, (0.0, 1.0))
    with pytest.raises(ValueError, match="built from given weights"):
        nd.remake(problem, depth=2)
    assert nd.remake(problem, tspan=(0.0, 2.0)).network is net  # other fields keep it


def test_compare_refuses_different_weights():
    data = nd.sphere_data(4, 3, key=0)
    net = nd.MLP(3, 8, 1, key=1)
    moved = eqx.tree_at(lambda n: n.readout, net, net.readout + 1e-3)  # same key, other weights
    flow = nd.solve(nd.GradientFlowProblem(net, data, (0.0, 0.5)), saveat=[0.0, 0.5], save_ntk=True)
    nth = nd.solve(nd.NTHProblem(moved, data, 2, (0.0, 0.5)), saveat=[0.0, 0.5])
    with pytest.raises(ValueError, match="same network parameters"):
        nd.compare(flow, nth)
    same = nd.solve(nd.NTHProblem(nd.MLP.from_weights(net.weights, net.readout), data, 2,
                                  (0.0, 0.5)), saveat=[0.0, 0.5])
    assert float(nd.compare(flow, same).err_f[0]) == 0.0  # equal by value: accepted

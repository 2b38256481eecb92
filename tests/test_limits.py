"""Infinite-width kernels: closed forms vs quadrature, convergence of the quadrature,
the recursions vs Monte-Carlo seed means of finite networks, ensemble estimates."""


import numpy as np
import pytest

import nthdyn as nd

from _models import sphere


def _covariances():
    """Covariance triples (s11, s12, s22) over correlations -1 .. 1 and unequal variances
    (equal ones at |rho| = 1, where E[sigma'(u) sigma'(v)] has an infinite derivative
    in rho and the rounding of s12 would be amplified to ~1e-8)."""
    rho = np.array([-1.0, -0.97, -0.6, -0.1, 0.0, 0.3, 0.8, 0.999, 1.0])
    s11, s22 = np.array([0.7, 2.1]), np.array([1.3, 0.4])
    s11, rho, s22 = np.meshgrid(s11, rho, s22, indexing="ij")
    s22 = np.where(np.abs(rho) == 1, s11, s22)
    return s11, rho * np.sqrt(s11 * s22), s22


@pytest.mark.parametrize("activation, quadrature", [
    ("relu", nd.PolarQuadrature(angular=32, radial=8)),
    ("erf", nd.GaussHermite(nodes=160)),
    ("identity", nd.GaussHermite(nodes=8)),
])
def test_closed_forms_equal_quadrature(activation, quadrature):
    s11, s12, s22 = _covariances()
    exact = nd.gaussian_expectations(activation, s11, s12, s22, quadrature=nd.ClosedForm())
    numeric = nd.gaussian_expectations(activation, s11, s12, s22, quadrature=quadrature)
    for a, b in zip(exact, numeric):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)


def test_gauss_hermite_converges_for_smooth_activations():
    s11, s12, s22 = 1.6, -0.9, 0.8  # tanh has no closed form: successive refinements
    values = np.array([nd.gaussian_expectations("tanh", s11, s12, s22,
                                                quadrature=nd.GaussHermite(nodes=k))
                       for k in (8, 16, 32, 64, 128, 256)])  # (6, 2)
    steps = np.abs(np.diff(values, axis=0)).max(axis=1)
    assert np.all(np.diff(steps) < 0), steps  # error ~ exp(-c sqrt(nodes))
    assert steps[-1] < 1e-9, steps
    errors = np.array([np.abs(np.subtract(
        nd.gaussian_expectations("erf", s11, s12, s22, quadrature=nd.GaussHermite(nodes=k)),
        nd.gaussian_expectations("erf", s11, s12, s22))).max() for k in (4, 8, 16, 32, 64)])
    assert np.all(np.diff(errors) < 0) and errors[-1] < 1e-10, errors


def test_quadrature_converges_across_the_relu_kink():
    """Gauss-Hermite converges only slowly (algebraically) across the kink; the polar
    rule, whose panels end at the kinks, is exact to rounding with few nodes."""
    s11, s12, s22 = 0.9, 0.35, 1.2
    exact = np.array(nd.gaussian_expectations("relu", s11, s12, s22))
    gh = [np.abs(np.array(nd.gaussian_expectations("relu", s11, s12, s22,
                                                    quadrature=nd.GaussHermite(nodes=k))) - exact).max()
          for k in (16, 64, 256)]
    assert gh[0] > gh[1] > gh[2] > 1e-5, gh  # converging, far from exact
    polar = [np.abs(np.array(nd.gaussian_expectations("relu", s11, s12, s22,
                                                       quadrature=nd.PolarQuadrature(angular=a, radial=2)))
                    - exact).max() for a in (1, 2, 4, 8)]
    assert polar[-1] < 1e-14 and polar[0] > 1e-6, polar


def test_jacot_relu_values_by_hand():
    """Unit inputs in R^2, beta = 0.1, relu, L = 4: on the diagonal sigma-dot = 1/2 and
    E[relu(u)^2] = s/2, so Sigma and Theta follow by hand."""
    beta2 = 0.01
    sigma, theta = 0.5 + beta2, 0.5 + beta2  # Sigma^(1) = Theta^(1) = x.x/2 + beta^2
    for _ in range(3):
        sigma = sigma / 2 + beta2
        theta = theta / 2 + sigma
    spec = nd.JacotMLP(2, 1, 3, "relu", beta=0.1, key=0)
    nngp, ntk = nd.limiting_kernels(spec, np.array([[0.6, 0.8]]))
    np.testing.assert_allclose([nngp[0, 0], ntk[0, 0]], [sigma, theta], rtol=1e-14)


def test_huang_yau_depth_one_by_hand():
    """H = 1: NNGP = sa^2 E[s(u)s(v)], NTK = E[s(u)s(v)] + sa^2 E[s'(u)s'(v)] x.x',
    with (u, v) of covariance sw^2 [x.x]: no 1/sqrt(d) on the first layer."""
    X = sphere(3, 4, seed=1) * np.array([[1.0], [0.5], [2.0]])
    sw, sa = 1.3, 0.7
    G = X @ X.T
    d = np.diag(G)
    value, slope = nd.gaussian_expectations("erf", sw**2 * d[:, None], sw**2 * G, sw**2 * d[None, :])
    nngp, ntk = nd.limiting_kernels(nd.MLP(4, 1, 1, "erf", sw=sw, sa=sa, key=0), X)
    np.testing.assert_allclose(nngp, sa**2 * value, rtol=1e-13)
    np.testing.assert_allclose(ntk, value + sa**2 * slope * G, rtol=1e-13)


def test_default_quadrature_matches_closed_form_through_depth():
    X, X2 = sphere(3, 3, seed=2), sphere(2, 3, seed=3)
    for net in (nd.MLP(3, 1, 3, "relu", sw=1.4, key=0), nd.JacotMLP(3, 1, 3, "relu", beta=0.2, key=0)):
        exact = nd.limiting_kernels(net, X, X2)
        polar = nd.limiting_kernels(net, X, X2, quadrature=nd.PolarQuadrature())
        for a, b in zip(exact, polar):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
        assert exact.ntk.shape == (3, 2)


# ------------------------------------------------------------------ Monte Carlo

# The standard error of the seed mean is ~ 1/sqrt(m S); the finite-width bias of K2
# is O(1/m), and zero at depth 1 (every term is an average of m independent units).
MC_SEEDS = 48
MC_CASES = [
    (family, activation, depth)
    for family in ("MLP", "JacotMLP") for activation in ("tanh", "relu") for depth in (1, 3)
]


def _network(family, activation, depth, width=1, frozen=()):
    if family == "MLP":
        return nd.MLP(3, width, depth, activation, sw=1.2, sa=0.9, frozen=frozen, key=0)
    return nd.JacotMLP(3, width, depth, activation, beta=0.3, frozen=frozen, key=0)


def _inputs():
    return sphere(3, 3, seed=7) * np.array([[1.0], [0.8], [1.25]])


@pytest.mark.parametrize("family, activation, depth", MC_CASES)
def test_limiting_ntk_equals_monte_carlo_seed_mean(family, activation, depth):
    width = 256
    ds = nd.estimate_kernel_limit(_network(family, activation, depth), _inputs(), widths=[width],
                                  seeds=range(MC_SEEDS))
    z = ds.z.sel(width=width).values
    assert np.max(np.abs(z)) < 3.0, (z, ds.K_mean.values, ds.K_limit.values)


@pytest.mark.parametrize("family, activation, frozen", [
    ("JacotMLP", "tanh", (1,)),  # a hidden map frozen
    ("MLP", "relu", (0, 1)),  # only the readout: the NTK is the last Gram matrix, E = NNGP / sa^2
])
def test_limit_with_frozen_maps_equals_monte_carlo(family, activation, frozen):
    """A frozen map drops its own term of the NTK recursion, and nothing else."""
    net = _network(family, activation, 2, frozen=frozen)
    ds = nd.estimate_kernel_limit(net, _inputs(), widths=[256], seeds=range(MC_SEEDS))
    assert np.max(np.abs(ds.z.values)) < 3.0, ds.z.values
    full = nd.limiting_kernels(net.remake(frozen=()), _inputs()).ntk
    assert np.all(np.diag(ds.K_limit.values) < np.diag(full))  # fewer trained maps


def test_training_only_the_output_layer_gives_the_nngp():
    """With every map but the output layer frozen, the NTK is the Gram matrix of the
    last hidden layer: the NNGP kernel (divided by sa^2 for Huang-Yau)."""
    X = sphere(4, 3, seed=10)
    hy = nd.MLP(3, 1, 2, "tanh", sw=1.3, sa=0.6, frozen=(0, 1), key=0)
    nngp, ntk = nd.limiting_kernels(hy, X)
    np.testing.assert_allclose(ntk, nngp / 0.6**2, rtol=1e-13)
    jacot = nd.JacotMLP(3, 1, 2, "relu", beta=0.2, frozen=(0, 1), key=0)
    nngp, ntk = nd.limiting_kernels(jacot, X)
    np.testing.assert_allclose(ntk, nngp, rtol=1e-13)


def test_estimate_kernel_limit_dataset(tmp_path):
    X = sphere(3, 3, seed=11)
    net = nd.MLP(3, 1, 2, "tanh", key=0)
    ds = nd.estimate_kernel_limit(net, X, widths=[16, 256], seeds=[2, 5])
    assert ds.K_mean.dims == ("width", "sample", "sample_b")
    assert set(ds.data_vars) >= {"K_mean", "K_std", "K_stderr", "K_limit", "z"}
    np.testing.assert_allclose(ds.K_stderr, ds.K_std / np.sqrt(2))
    # the members are those of EnsembleProblem: key fold_in(key(0), seed)
    members = [np.asarray(nd.ntk(net.remake(width=16, key=nd.member_key(s)), X)) for s in (2, 5)]
    np.testing.assert_allclose(ds.K_mean.sel(width=16), np.mean(members, axis=0), rtol=1e-13)
    path = nd.write_netcdf(ds, tmp_path / "limit.nc")
    assert nd.read_netcdf(path).K_limit.shape == (3, 3)


def test_nice_errors():
    X = sphere(2, 3, seed=0)
    with pytest.raises(TypeError, match="network=int"):
        nd.limiting_kernels(3, X)
    with pytest.raises(ValueError, match=r"ClosedForm\(\): tanh has no closed-form .*GaussHermite"):
        nd.gaussian_expectations("tanh", 1.0, 0.5, 1.0, quadrature=nd.ClosedForm())
    with pytest.raises(ValueError, match="s12\\^2 <= s11 s22"):
        nd.gaussian_expectations("relu", 1.0, 2.0, 1.0)
    with pytest.raises(TypeError, match="quadrature='gh'"):
        nd.gaussian_expectations("relu", 1.0, 0.5, 1.0, quadrature="gh")
    with pytest.raises(ValueError, match=r"GaussHermite\(nodes\)=0"):
        nd.GaussHermite(nodes=0)
    with pytest.raises(ValueError, match=r"GaussHermite\(nodes\)=512: .* at most 350"):
        nd.GaussHermite(nodes=512)
    with pytest.raises(ValueError, match="X1 has 2 columns"):
        nd.limiting_kernels(nd.MLP(3, 1, key=0), np.ones((2, 2)))
    with pytest.raises(ValueError, match="seeds=\\[0\\]: a standard error needs at least 2"):
        nd.estimate_kernel_limit(nd.MLP(3, 1, key=0), X, widths=[8], seeds=[0])

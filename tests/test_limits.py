"""Infinite-width kernels: closed forms vs quadrature, convergence of the quadrature,
the recursions vs Monte-Carlo seed means of finite networks, ensemble estimates."""

import math
from fractions import Fraction

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


# ------------------------------------------------------------------ relu near |rho| = 1
# E[sigma'(u) sigma'(v)] = (pi - theta) / (2 pi) has an infinite derivative in rho at
# rho = 1: a cross entry one ulp below the diagonal (a BLAS product beside a sum) gave
# theta ~ 1e-8 instead of 0, and the relu NTK was off on its diagonal by up to ~7e-9.

RELU_DIAGONAL_RULES = [(nd.ClosedForm(), 1e-15), (nd.PolarQuadrature(), 1e-13)]


def _second_inputs(X):
    """X2 = None, X itself, an equal copy, and some of its rows again (permuted, repeated)."""
    return {"None": None, "X": X, "copy": X.copy(), "rows": X[[9, 0, 5, 9, 3, 12]]}


def _diagonal_pairs(X, X2):
    """Index pairs (i, j) with X1[i] == X2[j] exactly (the diagonal for X2 = None)."""
    X2 = X if X2 is None else X2
    return np.nonzero(np.all(X[:, None, :] == X2[None, :, :], axis=-1))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("quadrature, rtol", RELU_DIAGONAL_RULES)
def test_relu_limit_is_exact_on_the_diagonal(depth, quadrature, rtol):
    """Huang-Yau relu, sw = sa = 1, unit inputs: on the diagonal E[relu(u)^2] = s/2
    and E[relu'(u)^2] = 1/2, so S_l = 2^-(l-1), T_1 = 1, T_{l+1} = 2^-l + T_l/2 = (l+1)/2^l,
    NNGP = L_H = 2^-H and NTK = L_H + T_H/2 = (H+1)/2^H, for every equal pair of inputs."""
    net = nd.MLP(3, 1, depth=depth, activation="relu", key=0)
    X = sphere(16, 3, seed=29)  # 4 cross entries 1 ulp below the norms
    for name, X2 in _second_inputs(X).items():
        nngp, ntk = nd.limiting_kernels(net, X, X2, quadrature=quadrature)
        i, j = _diagonal_pairs(X, X2)
        assert i.size >= 5, name
        np.testing.assert_allclose(ntk[i, j], (depth + 1) / 2**depth, rtol=rtol, atol=0, err_msg=name)
        np.testing.assert_allclose(nngp[i, j], 1 / 2**depth, rtol=rtol, atol=0, err_msg=name)
        if name != "rows":  # the same inputs twice: exactly symmetric, whichever way passed
            for K, K_none in zip((nngp, ntk), nd.limiting_kernels(net, X, quadrature=quadrature)):
                assert np.array_equal(K, K.T) and np.array_equal(K, K_none), name


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("quadrature, rtol", RELU_DIAGONAL_RULES)
def test_jacot_relu_limit_is_exact_on_the_diagonal(depth, quadrature, rtol):
    """Jacot relu, beta = 0.1, unit inputs in R^d: S_1 = T_1 = 1/d + beta^2,
    S_{l+1} = S_l/2 + beta^2, T_{l+1} = T_l/2 + S_{l+1}; NNGP = S_{H+1}, NTK = T_{H+1}
    (exact rationals of the float beta^2)."""
    net = nd.JacotMLP(3, 1, depth=depth, activation="relu", beta=0.1, key=0)
    beta2 = Fraction(net.beta**2)
    s = t = Fraction(1, 3) + beta2
    for _ in range(depth):
        s = s / 2 + beta2
        t = t / 2 + s
    X = sphere(16, 3, seed=29)
    for name, X2 in _second_inputs(X).items():
        nngp, ntk = nd.limiting_kernels(net, X, X2, quadrature=quadrature)
        i, j = _diagonal_pairs(X, X2)
        np.testing.assert_allclose(nngp[i, j], float(s), rtol=rtol, atol=0, err_msg=name)
        np.testing.assert_allclose(ntk[i, j], float(t), rtol=rtol, atol=0, err_msg=name)


def _arccos_relu(s11, s12, s22):
    """The arc-cosine kernels of degrees 1 and 0 as written by Cho & Saul, theta = arccos(rho)."""
    norm = np.sqrt(s11 * s22)
    rho = np.clip(s12 / norm, -1.0, 1.0)
    theta = np.arccos(rho)
    return (norm / (2 * np.pi) * (np.sqrt(1 - rho**2) + (np.pi - theta) * rho),
            (np.pi - theta) / (2 * np.pi))


def _arccos_huang_yau(X1, X2, depth):
    """The Huang-Yau relu recursion (sw = sa = 1) with the arccos formula, from X1 X2^T."""
    G = X1 @ X2.T
    S, d1, d2, T = G, np.sum(X1**2, axis=1), np.sum(X2**2, axis=1), G
    for layer in range(1, depth + 1):
        L, D = _arccos_relu(d1[:, None], S, d2[None, :])
        if layer < depth:
            S, d1, d2, T = L, d1 / 2, d2 / 2, L + D * T
    return L, L + D * T


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_relu_limit_off_the_diagonal_is_unchanged(depth):
    """Away from |rho| = 1 the stable angle arctan2(sqrt(det), s12) gives arccos's values
    (to rounding, relative to the scale of the kernel), and the diagonal is exact."""
    net = nd.MLP(3, 1, depth=depth, activation="relu", key=0)
    X = sphere(16, 3, seed=29)
    for X2 in (None, sphere(6, 3, seed=41)):
        Y = X if X2 is None else X2
        nngp, ntk = nd.limiting_kernels(net, X, X2)
        old_nngp, old_ntk = _arccos_huang_yau(X, Y, depth)
        apart = np.abs(X @ Y.T) < 0.99
        if X2 is None:
            np.fill_diagonal(apart, False)
        assert apart.sum() >= 0.75 * apart.size
        for K, K_old, scale in ((nngp, old_nngp, 1 / 2**depth), (ntk, old_ntk, (depth + 1) / 2**depth)):
            assert np.max(np.abs(K - K_old)[apart]) <= 2e-15 * scale
            if X2 is None:
                np.testing.assert_allclose(np.diag(K), scale, rtol=1e-15, atol=0)


def _relu_by_angle(s1, s2, theta):
    """(E[relu relu], E[relu' relu'], the next angle) from the variances and the angle,
    accurate for small angles: 1 - cos and sin - theta cos by their series."""
    odd = (theta**3 / 3 - theta**5 / 30 + theta**7 / 840 if theta < 1e-3
           else math.sin(theta) - theta * math.cos(theta))
    gap = (2 * math.pi * math.sin(theta / 2)**2 - odd) / math.pi  # 1 - (sin + (pi - theta) cos)/pi
    value = math.sqrt(s1 * s2) * (1 - gap) / 2
    return value, (math.pi - theta) / (2 * math.pi), 2 * math.asin(math.sqrt(gap / 2))


def _huang_yau_by_angle(x, y, depth):
    """The relu recursion (sw = sa = 1) on the variances and the angle of two inputs,
    the angle from the vectors (atan2 of |x cross y| and x.y): no 1 - rho anywhere."""
    cross = np.cross(x, y)
    s1, s2, theta = float(x @ x), float(y @ y), math.atan2(math.sqrt(cross @ cross), x @ y)
    T = float(x @ y)
    for layer in range(1, depth + 1):
        L, D, angle = _relu_by_angle(s1, s2, theta)
        if layer < depth:
            s1, s2, theta, T = s1 / 2, s2 / 2, angle, L + D * T
    return L, L + D * T


def test_relu_expectations_at_nearly_parallel_covariances():
    """Angles ~1e-6 with exactly known values: (1, 1, 1 + t^2) has tan(theta) = t, and
    (1, 1 - 2^-41, 1) has theta = 2 arcsin(2^-21). arccos(s12 / norm) lost ~1e-4 of theta
    (E[relu' relu'] off by ~1e-11); the error-free determinant keeps it to rounding."""
    for t in (2.0**-20, 67 * 2.0**-26):
        theta = t - t**3 / 3 + t**5 / 5  # arctan
        exact = ((t + math.pi - theta) / (2 * math.pi), (math.pi - theta) / (2 * math.pi))
        for quadrature, rtol in RELU_DIAGONAL_RULES:
            got = nd.gaussian_expectations("relu", 1.0, 1.0, 1.0 + t * t, quadrature=quadrature)
            np.testing.assert_allclose(got, exact, rtol=rtol, atol=0)
    theta = 2 * math.asin(2.0**-21)
    exact = ((math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi),
             (math.pi - theta) / (2 * math.pi))
    for scale in (1.0, 0.375, 6.0):  # E[relu relu] is homogeneous of degree 1, E[relu' relu'] of 0
        for quadrature, rtol in RELU_DIAGONAL_RULES:
            got = nd.gaussian_expectations("relu", scale, scale * (1 - 2.0**-41), scale,
                                           quadrature=quadrature)
            np.testing.assert_allclose(got, (scale * exact[0], exact[1]), rtol=rtol, atol=0)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_relu_limit_stays_accurate_for_nearly_parallel_inputs(depth):
    """Inputs at angles ~1e-6 (exact Gram matrix) against the angle recursion. Each layer
    rounds L.c to 1e-16, which moves the next angle by ~1e-16 / theta: a few 1e-13 at
    depth >= 2; arccos, fed 1 - rho to 1e-16 as well, was ~1e-10 off at every layer."""
    net = nd.MLP(3, 1, depth=depth, activation="relu", key=0)
    for t in (2.0**-20, 67 * 2.0**-26):
        X = np.array([[1.0, 0.0, 0.0], [1.0, t, 0.0], [1.0, -t, 0.0], [0.6, 0.8, 0.0]])
        nngp, ntk = nd.limiting_kernels(net, X)
        rtol = 1e-15 if depth == 1 else 1e-11
        for i, j in ((0, 1), (0, 2), (1, 2), (0, 3), (2, 3)):
            exact = _huang_yau_by_angle(X[i], X[j], depth)
            np.testing.assert_allclose([nngp[i, j], ntk[i, j]], exact, rtol=rtol, atol=0,
                                       err_msg=f"t={t}, pair {i, j}")
        np.testing.assert_allclose(np.diag(ntk)[[0, 3]], (depth + 1) / 2**depth, rtol=1e-15)


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

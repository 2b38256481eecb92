"""Kernel regression, eq. (8): the closed form against the ODE solve and the matrix
exponential, test points (eq. (22) with p = 2), singular kernels, the infinite-width
Gaussian distribution of functions."""

import math

import numpy as np
import pytest
import scipy.linalg

import nthdyn as nd

from _models import sphere

TIMES = np.linspace(0.0, 30.0, 7)


@pytest.fixture(scope="module")
def setting():
    data = nd.sphere_data(n=5, d=3, key=3)
    test = sphere(4, 3, seed=4)
    net = nd.MLP(3, 16, 2, "tanh", key=5)
    return data, test, net


def test_closed_form_equals_ode_for_the_limiting_ntk(setting):
    data, test, net = setting
    problem = nd.KernelRegressionProblem(nd.LimitingNTK(net), data, (0.0, 30.0), test)
    assert float(np.abs(problem.initial_outputs()[0]).max()) == 0.0  # the infinite-width mean
    exact = nd.solve(problem, saveat=TIMES)
    ode = nd.solve(problem, nd.Tsit5(), saveat=TIMES, rtol=1e-12, atol=1e-12)
    for name in ("f", "dfdt", "f_test", "dfdt_test"):
        np.testing.assert_allclose(getattr(ode, name), getattr(exact, name), rtol=0, atol=1e-9)
    assert exact.solver == "Eigendecomposition" and ode.solver == "Tsit5"
    assert float(exact.loss[-1]) < float(exact.loss[0])


def test_finite_ntk_equals_matrix_exponential_and_ode(setting):
    """Kernel regression with the finite-width NTK at t = 0 is the NTH truncated at p = 2:
    f(t) = y + expm(-K t/n)(f0 - y) and f_x(t) = f_x(0) - K(x,X) K^-1 (I - expm(-K t/n))(f0 - y)."""
    data, test, net = setting
    problem = nd.KernelRegressionProblem(nd.FiniteNTK(net), data, (0.0, 30.0), test)
    f0, f0_test = problem.initial_outputs()
    np.testing.assert_allclose(f0, net(data.X), rtol=1e-15)  # starts at the network
    np.testing.assert_allclose(f0_test, net(test), rtol=1e-15)
    exact = nd.solve(problem, saveat=TIMES)
    K = np.asarray(nd.ntk(net, data.X))
    K_test = np.asarray(nd.ntk(net, test, data.X))
    r0 = np.asarray(f0 - data.y)
    n = data.n
    for k, t in enumerate(TIMES):
        E = scipy.linalg.expm(-K * t / n)
        np.testing.assert_allclose(exact.f[k], data.y + E @ r0, rtol=0, atol=1e-12)
        test_value = f0_test - K_test @ np.linalg.solve(K, (np.eye(n) - E) @ r0)
        np.testing.assert_allclose(exact.f_test[k], test_value, rtol=0, atol=1e-10)


def test_singular_kernel_and_a_late_start():
    """The linear kernel x.x' on 5 points in R^2 has rank 2: the residual outside its
    range never moves, and test points need no inverse."""
    data = nd.sphere_data(n=5, d=2, key=8)
    test = sphere(4, 2, seed=9)
    problem = nd.KernelRegressionProblem(lambda A, B: A @ B.T, data, (2.0, 50.0), test,
                                         f0=np.full(5, 0.3), f0_test=np.zeros(4))
    times = np.linspace(2.0, 50.0, 7)
    exact = nd.solve(problem, saveat=times)
    ode = nd.solve(problem, nd.Tsit5(), saveat=times, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ode.f, exact.f, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ode.f_test, exact.f_test, rtol=0, atol=1e-9)
    null = scipy.linalg.null_space(np.asarray(data.X).T)  # residuals the kernel cannot reach
    r = np.asarray(exact.f) - np.asarray(data.y)
    np.testing.assert_allclose(r @ null, np.broadcast_to(r[0] @ null, (7, 3)), atol=1e-12)
    assert np.all(np.isfinite(exact.f_test))


def test_to_dataset_and_netcdf(setting, tmp_path):
    data, test, net = setting
    sol = nd.solve(nd.KernelRegressionProblem(nd.LimitingNTK(net), data, (0.0, 5.0), test),
                   saveat=[0.0, 1.0, 5.0], save_ntk=True)
    ds = nd.to_dataset(sol, title="kernel regression")
    assert ds.f.dims == ("time", "sample") and ds.f_test.dims == ("time", "test")
    assert ds.ntk.shape == (3, 5, 5)
    path = nd.write_netcdf(ds, tmp_path / "kr.nc")
    assert "LimitingNTK" in nd.read_netcdf(path).attrs["config"]
    np.testing.assert_allclose(sol(1.0), sol.f[1])


def test_limiting_distribution_interpolates_and_matches_regression(setting):
    data, test, net = setting
    spec = nd.JacotMLP(3, 1, 2, "relu", beta=0.1, key=0)
    at_infinity = nd.limiting_distribution(spec, data, np.concatenate([np.asarray(data.X), test]))
    np.testing.assert_allclose(at_infinity.mean[:5], data.y, atol=1e-9)  # interpolates
    assert np.abs(np.diag(at_infinity.covariance)[:5]).max() < 1e-9  # no variance at the data
    assert np.all(np.diag(at_infinity.covariance)[5:] > 1e-6)
    # the mean at time t is kernel regression from f0 = 0
    t = 7.0
    at_t = nd.limiting_distribution(spec, data, test, t=t)
    sol = nd.solve(nd.KernelRegressionProblem(nd.LimitingNTK(spec), data, (0.0, t), test),
                   saveat=[t])
    np.testing.assert_allclose(at_t.mean, sol.f_test[-1], rtol=0, atol=1e-12)
    late = nd.limiting_distribution(spec, data, test, t=1e7)
    np.testing.assert_allclose(late.mean, at_infinity.mean[5:], atol=1e-6)
    np.testing.assert_allclose(late.covariance, at_infinity.covariance[5:, 5:], atol=1e-6)
    # at t = 0 it is the NNGP prior
    prior = nd.limiting_distribution(spec, data, test, t=0.0)
    np.testing.assert_allclose(prior.covariance, nd.limiting_kernels(spec, test).nngp, atol=1e-14)
    sd = math.sqrt(prior.covariance[0, 0])
    np.testing.assert_allclose(prior.percentile(90)[0], 1.2815515655446004 * sd, rtol=1e-12)


def test_nice_errors(setting):
    data, test, net = setting
    with pytest.raises(TypeError, match="nthdyn.FiniteNTK\\(network\\).*nthdyn.LimitingNTK"):
        nd.KernelRegressionProblem(net, data, (0.0, 1.0))
    with pytest.raises(ValueError, match=r"f0 has shape \(3,\): pass one output per training input, shape \(5,\)"):
        nd.KernelRegressionProblem(nd.LimitingNTK(net), data, (0.0, 1.0), f0=np.zeros(3))
    with pytest.raises(ValueError, match="f0_test was given but test is None"):
        nd.KernelRegressionProblem(nd.LimitingNTK(net), data, (0.0, 1.0), f0_test=np.zeros(3))
    with pytest.raises(ValueError, match="tspan"):
        nd.KernelRegressionProblem(nd.LimitingNTK(net), data, (1.0, 0.0))
    negative = nd.KernelRegressionProblem(lambda A, B: -(A @ B.T), data, (0.0, 1.0))
    with pytest.raises(ValueError, match=r"not positive semi-definite \(smallest eigenvalue"):
        nd.solve(negative)
    with pytest.raises(TypeError, match="solver='rk4'.*Eigendecomposition"):
        nd.solve(nd.KernelRegressionProblem(nd.LimitingNTK(net), data, (0.0, 1.0)), "rk4")
    with pytest.raises(ValueError, match="t=-1.0"):
        nd.limiting_distribution(net, data, test, t=-1.0)

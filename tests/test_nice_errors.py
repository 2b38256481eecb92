"""Bad inputs fail early with an exception that names the argument and its value
and says what to pass instead."""

import jax
import numpy as np
import pytest

import nthdyn as nd
import nthdyn._problems._flow
from _models import sphere

X = sphere(4, 3, 0)
Y = np.array([0.1, -0.2, 0.3, 0.4])


@pytest.fixture(scope="module")
def net():
    return nd.MLP(3, 8, 1, key=jax.random.key(0))


@pytest.fixture(scope="module")
def problem(net):
    return nd.GradientFlowProblem(net, (X, Y), tspan=(0.0, 1.0))


# -- data ---------------------------------------------------------------------


def test_inputs_wrong_ndim():
    with pytest.raises(ValueError, match=r"X has shape \(3,\): expected a non-empty matrix "
                                         r"\(n, d\).*use x\[None, :\]"):
        nd.TrainingSet(X[0], Y[:1])


def test_labels_length_mismatch():
    with pytest.raises(ValueError, match=r"y has shape \(3,\) but X has 4 rows: pass one label "
                                         r"per input, shape \(4,\)"):
        nd.TrainingSet(X, Y[:3])


def test_string_data():
    with pytest.raises(TypeError, match=r"X has dtype <U\d+: pass real numbers"):
        nd.TrainingSet(np.array([["a", "b", "c"]]), [1.0])


def test_nan_in_inputs():
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"X has a non-finite value \(nan\) at row 2, column 1: "
                                         r"drop or replace"):
        nd.TrainingSet(bad, Y)


def test_zero_norm_row():
    bad = X.copy()
    bad[1] = 0.0
    with pytest.raises(ValueError, match=r"X row 1 has norm 0: .*Assumption 2\.2.*Normalise the "
                                         r"rows"):
        nd.TrainingSet(bad, Y)


def test_test_points_wrong_columns(net):
    with pytest.raises(ValueError, match=r"test has 2 columns but the network takes inputs of "
                                         r"size 3"):
        nd.GradientFlowProblem(net, (X, Y), (0.0, 1.0), test=np.eye(2))


def test_ntk_inputs_wrong_columns(net):
    with pytest.raises(ValueError, match=r"X1 has 4 columns .* inputs of size 3"):
        nd.ntk(net, np.eye(4))


# -- networks -----------------------------------------------------------------


@pytest.mark.parametrize("width", [-4, 0])
def test_bad_width(width):
    with pytest.raises(ValueError, match=rf"width={width}: must be an integer >= 1"):
        nd.MLP(3, width, key=jax.random.key(0))


def test_depth_zero():
    with pytest.raises(ValueError, match=r"depth=0: must be an integer >= 1"):
        nd.JacotMLP(3, 8, depth=0, key=jax.random.key(0))


def test_width_not_an_integer():
    with pytest.raises(ValueError, match=r"width=8\.5: must be an integer"):
        nd.MLP(3, 8.5, key=jax.random.key(0))


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"activation='swish' is not known\. Use one of "
                                         r"\[.*'tanh'.*\] or an instance such as "
                                         r"nthdyn\.Softplus\(sharpness=4\.0\)"):
        nd.MLP(3, 8, activation="swish", key=jax.random.key(0))


def test_softplus_negative_sharpness():
    with pytest.raises(ValueError, match=r"Softplus\(sharpness=-1\): the sharpness must be a "
                                         r"positive number, e\.g\. Softplus\(sharpness=4\.0\)"):
        nd.Softplus(sharpness=-1)


def test_bad_key():
    with pytest.raises(TypeError, match=r"key='abc' is not a random key\. Pass "
                                        r"jax\.random\.key\(seed\)"):
        nd.MLP(3, 8, key="abc")


def test_negative_weight_scale():
    with pytest.raises(ValueError, match=r"sw=-1\.0: must be a finite number > 0"):
        nd.MLP(3, 8, sw=-1.0, key=jax.random.key(0))


# -- problems -----------------------------------------------------------------


def test_network_in_size_mismatch():
    wrong = nd.MLP(5, 8, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"data has inputs of dimension 3 but the network takes "
                                         r"in_size=5: build the network with in_size=3"):
        nd.GradientFlowProblem(wrong, (X, Y), (0.0, 1.0))


def test_not_a_network():
    with pytest.raises(TypeError, match=r"network=ndarray: pass an nthdyn network"):
        nd.GradientFlowProblem(np.zeros(3), (X, Y), (0.0, 1.0))


def test_tspan_reversed(net):
    with pytest.raises(ValueError, match=r"tspan=\(1\.0, 0\.0\): the end must be after the start "
                                         r"\(t0 < t1\)"):
        nd.GradientFlowProblem(net, (X, Y), (1.0, 0.0))


@pytest.mark.parametrize("tspan", [(0.0, np.inf), (np.nan, 1.0)])
def test_tspan_not_finite(net, tspan):
    with pytest.raises(ValueError, match=r"tspan=\(.*(inf|nan).*\): both ends must be finite"):
        nd.GradientFlowProblem(net, (X, Y), tspan)


def test_tspan_not_a_pair(net):
    with pytest.raises(ValueError, match=r"tspan=5\.0: pass two numbers \(t0, t1\)"):
        nd.GradientFlowProblem(net, (X, Y), 5.0)


@pytest.mark.parametrize("rate", [0.0, -0.1])
def test_learning_rate_not_positive(net, rate):
    with pytest.raises(ValueError, match=rf"learning_rate={rate}: must be a finite number > 0"):
        nd.GradientDescentProblem(net, (X, Y), steps=10, learning_rate=rate)


def test_remake_unknown_field(problem):
    with pytest.raises(TypeError, match=r"MLP has no hyperparameter \['widht'\]; it has "
                                        r"\[.*'width'.*\]"):
        nd.remake(problem, widht=16)


# -- solve --------------------------------------------------------------------


def test_saveat_outside_span(problem):
    with pytest.raises(ValueError, match=r"saveat: times must lie in tspan=\(0, 1\); got "
                                         r"0 \.\. 2"):
        nd.solve(problem, saveat=[0.0, 0.5, 2.0])


def test_saveat_not_increasing(problem):
    with pytest.raises(ValueError, match=r"saveat: times must be strictly increasing, got "
                                         r"\[0\.  0\.5 0\.2\]"):
        nd.solve(problem, saveat=[0.0, 0.5, 0.2])


def test_saveat_not_finite(problem):
    with pytest.raises(ValueError, match=r"saveat=.*nan.*: pass a non-empty 1-d array of finite "
                                         r"times"):
        nd.solve(problem, saveat=[0.0, np.nan])


def test_solver_class_instead_of_instance(problem):
    with pytest.raises(TypeError, match=r"solver=Tsit5: pass an instance, e\.g\. Tsit5\(\)"):
        nd.solve(problem, nd.Tsit5)


def test_solver_not_adaptive(problem):
    with pytest.raises(TypeError, match=r"pass an adaptive diffrax solver such as "
                                        r"nthdyn\.Tsit5\(\)"):
        nd.solve(problem, "rk4")


def test_implicit_solver_on_big_network():
    big = nd.MLP(3, 200, depth=2, key=jax.random.key(0))  # 3*200 + 200^2 + 200 parameters
    assert nd.parameter_count(big) == 40_800 > nthdyn._problems._flow.IMPLICIT_MAX_PARAMETERS
    problem = nd.GradientFlowProblem(big, (X, Y), (0.0, 1.0))
    with pytest.raises(ValueError, match=r"solver=Kvaerno5\(\) is implicit: its Newton step "
                                         r"builds a dense 40800 x 40800 Jacobian.*Use an "
                                         r"explicit solver \(Tsit5, Dopri8\)"):
        nd.solve(problem, nd.Kvaerno5())


def test_gradient_descent_with_solver(net):
    problem = nd.GradientDescentProblem(net, (X, Y), steps=3, learning_rate=0.1)
    with pytest.raises(TypeError, match=r"solver=Tsit5\(.*\): GradientDescentProblem takes "
                                        r"nthdyn.GradientDescent\(\).*use GradientFlowProblem"):
        nd.solve(problem, nd.Tsit5())


def test_gradient_descent_fractional_steps(net):
    problem = nd.GradientDescentProblem(net, (X, Y), steps=3, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"saveat: gradient-descent steps must be integers"):
        nd.solve(problem, saveat=[0, 1.5])


def test_solve_unknown_problem():
    with pytest.raises(TypeError, match=r"solve has no method for str; pass one of "
                                        r"\[.*'GradientFlowProblem'.*'NTHProblem'"):
        nd.solve("problem")


def test_max_steps_reached(problem):
    """Both behaviours share one compilation (same static arguments)."""
    options = dict(saveat=[0.0, 1.0], max_steps=2)
    with pytest.raises(nd.SolverError, match=r"max_steps_reached: max_steps=2 steps were not "
                                             r"enough to reach t=1\.0.*Raise max_steps"):
        nd.solve(problem, **options)
    sol = nd.solve(problem, throw=False, **options)
    assert sol.retcode == 1
    assert sol.status == "max_steps_reached"
    assert nd.RETCODES[sol.retcode] == "max_steps_reached"


def test_gradient_descent_divergence(net):
    """A far too large learning rate overflows: retcode 2, or SolverError."""
    problem = nd.GradientDescentProblem(net, (X, 100.0 * Y), steps=200, learning_rate=1e3)
    with pytest.raises(nd.SolverError, match=r"nonfinite: gradient descent diverged.*"
                                             r"learning_rate=1000\.0: lower the learning rate"):
        nd.solve(problem, saveat=[200])
    sol = nd.solve(problem, saveat=[200], throw=False)
    assert sol.retcode == 2 and sol.status == "nonfinite"


def test_interpolating_gradient_descent_between_steps(net):
    sol = nd.solve(nd.GradientDescentProblem(net, (X, Y), steps=2, learning_rate=0.1))
    with pytest.raises(ValueError, match=r"gradient descent has values only at the saved steps; "
                                         r"add this step to saveat"):
        sol(0.5)
    with pytest.raises(ValueError, match=r"variable='loss': use 'f' or 'f_test'"):
        sol.evaluate(1.0, "loss")
    with pytest.raises(ValueError, match=r"no 'f_test' \(pass test= to the problem\)"):
        sol.evaluate(1.0, "f_test")

"""Bad inputs fail early with an exception that names the argument and its value
and says what to pass instead."""

import diffrax
import jax
import numpy as np
import pytest
import xarray as xr

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


# -- every public entry point, as a careful new user would misuse it ------------
#
# One row per bad input: the call, the exception type, and a regex that checks the
# argument's name, its value and the advice. Every row fails before any compilation.

NAN = float("nan")


def _tiny(in_size=3, **kwargs):
    return nd.MLP(in_size, 4, key=0, **kwargs)


def _function_kernel(X1, X2):
    return X1 @ X2.T


@pytest.fixture(scope="module")
def descent(net):
    return nd.GradientDescentProblem(net, (X, Y), steps=3, learning_rate=0.1)


@pytest.fixture(scope="module")
def nth(net):
    return nd.NTHProblem(net, (X, Y), 2, (0.0, 1.0))


@pytest.fixture(scope="module")
def regression(net):
    return nd.KernelRegressionProblem(nd.FiniteNTK(net), (X, Y), (0.0, 1.0))


@pytest.fixture(scope="module")
def ensemble(problem):
    return nd.EnsembleProblem(problem, seeds=range(2))


@pytest.fixture(scope="module")
def objects(net, problem, descent, nth, regression, ensemble):
    return dict(net=net, flow=problem, descent=descent, nth=nth, regression=regression,
                ensemble=ensemble)


def _check(call, error, message, objects):
    with pytest.raises(error, match=message):
        call(objects)


NETWORKS = [
    pytest.param(lambda o: nd.MLP(0, 8, key=0), ValueError,
                 r"in_size=0: must be an integer >= 1", id="MLP-in_size-0"),
    pytest.param(lambda o: nd.MLP(3, 8, sw="1", key=0), TypeError,
                 r"sw='1': must be a positive number", id="MLP-sw-string"),
    pytest.param(lambda o: nd.MLP(3, 8, key=-1), ValueError,
                 r"key=-1: an integer seed must be >= 0", id="MLP-key-negative"),
    pytest.param(lambda o: nd.MLP(3, 8, activation=jax.numpy.tanh, key=0), ValueError,
                 r"activation=.*tanh.* is not known\. Use one of \[.*'tanh'\] or an instance "
                 r"such as nthdyn\.Softplus", id="MLP-activation-function"),
    pytest.param(lambda o: nd.MLP(3, 8, frozen=(-1,), key=0), ValueError,
                 r"frozen=\(-1,\): pass a tuple of linear-map indices in 0\.\.1 .*e\.g\. "
                 r"frozen=\(1,\)", id="MLP-frozen-negative"),
    pytest.param(lambda o: nd.Softplus(sharpness=float("inf")), ValueError,
                 r"Softplus\(sharpness=inf\): the sharpness must be a positive number.*"
                 r"infinite sharpness is relu: use nthdyn\.Relu\(\)", id="Softplus-inf"),
    pytest.param(lambda o: nd.JacotMLP(3, 8, beta=-1, key=0), ValueError,
                 r"beta=-1\.0: must be a finite number >= 0", id="JacotMLP-beta-negative"),
    pytest.param(lambda o: nd.MLP.from_weights([np.ones((0, 3))], np.ones(0)), ValueError,
                 r"weights\[0\] has shape \(0, 3\): a layer needs at least one unit and one "
                 r"input", id="MLP.from_weights-empty-layer"),
    pytest.param(lambda o: nd.MLP.from_weights([np.full((4, 3), "a")], np.ones(4)), TypeError,
                 r"weights\[0\] has dtype <U1: pass real numbers", id="MLP.from_weights-strings"),
    pytest.param(lambda o: nd.JacotMLP.from_weights([np.ones((4, 3))], [np.ones(4)]),
                 ValueError, r"weights has 1 matrix: pass at least two, the hidden layers and "
                             r"then the output layer \(1, m\)", id="JacotMLP.from_weights-one"),
    pytest.param(lambda o: nd.JacotMLP.from_weights([np.ones((4, 3)), np.ones((2, 4))],
                                                    [np.ones(4), np.ones(2)]),
                 ValueError, r"weights\[1\] has shape \(2, 4\); expected \(1, 4\)",
                 id="JacotMLP.from_weights-output-layer"),
    pytest.param(lambda o: nd.JacotMLP.from_weights([np.ones((4, 3)), np.ones((1, 4))],
                                                    [np.ones(3), np.ones(1)]),
                 ValueError, r"biases\[0\] has shape \(3,\); expected \(4\)",
                 id="JacotMLP.from_weights-bias"),
]


@pytest.mark.parametrize("call, error, message", NETWORKS)
def test_networks(call, error, message, objects):
    _check(call, error, message, objects)


DATA = [
    pytest.param(lambda o: nd.TrainingSet(X, [0.1, NAN, 0.3, 0.4]), ValueError,
                 r"y has a non-finite label \(nan\) at index 1: drop or replace that point",
                 id="TrainingSet-y-nan"),
    pytest.param(lambda o: nd.TrainingSet(X * 1j, Y), TypeError,
                 r"X has dtype complex128: pass real numbers", id="TrainingSet-X-complex"),
    pytest.param(lambda o: nd.TrainingSet(X, ["a"] * 4), TypeError,
                 r"y has dtype <U1: pass real numbers", id="TrainingSet-y-strings"),
    pytest.param(lambda o: nd.sphere_data(0, 3, key=0), ValueError,
                 r"n=0: must be an integer >= 1", id="sphere_data-n-0"),
    pytest.param(lambda o: nd.sphere_data(4, 3, key=0, labels=lambda x: x), ValueError,
                 r"y has shape \(4, 3\) but X has 4 rows: pass one label per input, "
                 r"shape \(4,\)", id="sphere_data-labels-function-shape"),
    pytest.param(lambda o: nd.circle_data(4, spacing="uniform"), ValueError,
                 r"spacing='uniform': use 'even' or 'random'", id="circle_data-spacing"),
    pytest.param(lambda o: nd.GradientFlowProblem(o["net"], X, (0.0, 1.0)), TypeError,
                 r"data=ndarray: pass a TrainingSet\(X, y\), an \(X, y\) pair",
                 id="problem-data-X-only"),
    pytest.param(lambda o: nd.GradientFlowProblem(o["net"], [X, Y], (0.0, 1.0)), TypeError,
                 r"data=list: pass a TrainingSet\(X, y\), an \(X, y\) pair",
                 id="problem-data-list"),
    pytest.param(lambda o: nd.GradientFlowProblem(o["net"], (X, Y), (0.0, 1.0), test=X * NAN),
                 ValueError, r"test has a non-finite value \(nan\) at row 0, column 0: drop or "
                             r"replace", id="problem-test-nan"),
]


@pytest.mark.parametrize("call, error, message", DATA)
def test_data(call, error, message, objects):
    _check(call, error, message, objects)


PROBLEMS = [
    pytest.param(lambda o: nd.GradientDescentProblem(o["net"], (X, Y), 2.5, 0.1), ValueError,
                 r"steps=2\.5: must be an integer >= 1", id="GradientDescentProblem-steps"),
    pytest.param(lambda o: nd.GradientDescentProblem(o["net"], (X, Y), 3, "0.1"), TypeError,
                 r"learning_rate='0\.1': must be a positive number",
                 id="GradientDescentProblem-learning_rate-string"),
    pytest.param(lambda o: nd.GradientFlowProblem(o["net"], (X, Y), (0.0, 1.0, 2.0)),
                 ValueError, r"tspan=\(0\.0, 1\.0, 2\.0\): pass two numbers \(t0, t1\)",
                 id="tspan-three-numbers"),
    pytest.param(lambda o: nd.KernelRegressionProblem(3, (X, Y), (0.0, 1.0)), TypeError,
                 r"kernel=3: pass nthdyn\.LimitingNTK\(net\), nthdyn\.FiniteNTK\(net\) or a "
                 r"function kernel\(X1, X2\)", id="KernelRegressionProblem-kernel-number"),
    pytest.param(lambda o: nd.FiniteNTK(3), TypeError,
                 r"FiniteNTK\(network=int\): pass an nthdyn network", id="FiniteNTK-not-network"),
    pytest.param(lambda o: nd.KernelRegressionProblem(nd.FiniteNTK(_tiny(5)), (X, Y), (0.0, 1.0)),
                 ValueError, r"data has inputs of dimension 3 but the kernel's network takes "
                             r"in_size=5: build the network with in_size=3",
                 id="KernelRegressionProblem-in_size"),
    pytest.param(lambda o: nd.KernelRegressionProblem(nd.FiniteNTK(o["net"]), (X, Y), (0.0, 1.0),
                                                      f0=[NAN, 0.0, 0.0, 0.0]),
                 ValueError, r"f0 has a non-finite value \(nan\) at index 0: pass finite outputs, "
                             r"or f0=None", id="KernelRegressionProblem-f0-nan"),
    pytest.param(lambda o: nd.remake(o["net"], width=4), TypeError,
                 r"remake takes a problem, not MLP", id="remake-network"),
    pytest.param(lambda o: nd.low_rank_descent(o["flow"]), TypeError,
                 r"problem=GradientFlowProblem: pass a GradientDescentProblem",
                 id="low_rank_descent-flow"),
    pytest.param(lambda o: nd.LowRankGradientDescent(low_rank="yes"), TypeError,
                 r"low_rank='yes': pass True \(factor every trained matrix\), False \(none\) or "
                 r"None", id="LowRankGradientDescent-low_rank"),
    pytest.param(lambda o: nd.LowRankGradientDescent(dense_network="no"), TypeError,
                 r"dense_network='no': pass True \(return dense matrices\) or False",
                 id="LowRankGradientDescent-dense_network"),
    pytest.param(lambda o: nd.initial_kernels(o["flow"]), TypeError,
                 r"problem=GradientFlowProblem: initial_kernels takes an nthdyn\.NTHProblem",
                 id="initial_kernels-flow"),
]


@pytest.mark.parametrize("call, error, message", PROBLEMS)
def test_problems(call, error, message, objects):
    _check(call, error, message, objects)


def _five_point_kernels():
    return nd.HierarchyKernels(f=np.zeros(5), K=(np.zeros((5, 5)),), f_test=None, K_test=None)


SOLVE = [
    pytest.param(lambda o: nd.solve(o["flow"], rtol=0.0), ValueError,
                 r"rtol=0\.0: must be a finite number > 0", id="rtol-0"),
    pytest.param(lambda o: nd.solve(o["flow"], atol=NAN), ValueError,
                 r"atol=nan: must be a finite number > 0", id="atol-nan"),
    pytest.param(lambda o: nd.solve(o["flow"], max_steps=1e3), ValueError,
                 r"max_steps=1000\.0: must be an integer >= 1", id="max_steps-float"),
    pytest.param(lambda o: nd.solve(o["flow"], dt0=-0.1), ValueError,
                 r"dt0=-0\.1: must be a finite number > 0", id="dt0-negative"),
    pytest.param(lambda o: nd.solve(o["flow"], saveat=[]), ValueError,
                 r"saveat=\[\]: pass a non-empty 1-d array of finite times", id="saveat-empty"),
    pytest.param(lambda o: nd.solve(o["flow"], saveat="end"), ValueError,
                 r"saveat='end': pass a 1-d array of times", id="saveat-string"),
    pytest.param(lambda o: nd.solve(o["flow"], saveat=[[0.0, 1.0]]), ValueError,
                 r"saveat=\[\[0\.0, 1\.0\]\]: pass a non-empty 1-d array", id="saveat-2d"),
    pytest.param(lambda o: nd.solve(o["flow"], diffrax.Euler()), TypeError,
                 r"solver=Euler\(\): pass an adaptive diffrax solver such as nthdyn\.Tsit5\(\)",
                 id="flow-solver-fixed-step"),
    pytest.param(lambda o: nd.solve(o["flow"], nd.LowRankGradientDescent()), TypeError,
                 r"solver=LowRankGradientDescent\(.*\): pass an adaptive diffrax solver",
                 id="flow-solver-descent-method"),
    pytest.param(lambda o: nd.solve(o["nth"], save_ntk=True), TypeError,
                 r"solve\(NTHProblem, \.\.\.\) got unknown options \['save_ntk'\]; the options "
                 r"are \[.*'kernels', 'reduced', 'max_bytes'\]", id="nth-save_ntk"),
    pytest.param(lambda o: nd.solve(o["descent"], saveat=[0, 5]), ValueError,
                 r"saveat: times must lie in steps=\(0, 3\); got 0 \.\. 5",
                 id="descent-saveat-past-steps"),
    pytest.param(lambda o: nd.solve(o["nth"], kernels=_five_point_kernels()), ValueError,
                 r"kernels=\.\.\.: they are for 5 training points; this problem has n=4",
                 id="nth-kernels-size"),
    pytest.param(lambda o: nd.solve(o["nth"], reduced="yes"), TypeError,
                 r"reduced='yes': pass None \(automatic\), True \(.*\) or False",
                 id="nth-reduced-string"),
    pytest.param(lambda o: nd.solve(o["nth"], max_bytes="1G"), TypeError,
                 r"max_bytes='1G': pass the largest kernel tensor to build, in bytes .*e\.g\. "
                 r"max_bytes=2 \* 1024\*\*3", id="nth-max_bytes-string"),
    pytest.param(lambda o: nd.solve(o["regression"], nd.Tsit5), TypeError,
                 r"solver=Tsit5: pass an instance, e\.g\. Tsit5\(\)",
                 id="regression-solver-class"),
    pytest.param(lambda o: nd.solve(o["regression"], nd.GradientDescent()), TypeError,
                 r"solver=GradientDescent\(\): pass None or nthdyn\.Eigendecomposition\(\) for "
                 r"the closed form", id="regression-solver-descent"),
]


@pytest.mark.parametrize("call, error, message", SOLVE)
def test_solve_options(call, error, message, objects):
    _check(call, error, message, objects)


KERNELS = [
    pytest.param(lambda o: nd.ntk("net", X), TypeError,
                 r"network=str: pass an nthdyn network instance such as nthdyn\.MLP",
                 id="ntk-not-network"),
    pytest.param(lambda o: nd.ntk(nd.MLP, X), TypeError,
                 r"network=MLP \(a class\): pass an nthdyn network instance",
                 id="ntk-network-class"),
    pytest.param(lambda o: nd.ntk(o["net"], X, np.eye(2)), ValueError,
                 r"X2 has 2 columns but the network takes inputs of size 3", id="ntk-X2-columns"),
    pytest.param(lambda o: nd.hierarchy_kernel("net", X, 2), TypeError,
                 r"network=str: pass an nthdyn network instance", id="hierarchy_kernel-network"),
    pytest.param(lambda o: nd.hierarchy_kernel(o["net"], X, 2, max_bytes=-1), ValueError,
                 r"max_bytes=-1: pass the largest kernel tensor to build, in bytes \(a number "
                 r"> 0\)", id="hierarchy_kernel-max_bytes-negative"),
    pytest.param(lambda o: nd.hierarchy_kernel(o["net"], X, 2, max_bytes="2GB"), TypeError,
                 r"max_bytes='2GB': pass the largest kernel tensor to build, in bytes",
                 id="hierarchy_kernel-max_bytes-string"),
    pytest.param(lambda o: nd.hierarchy_kernel(o["net"], X, 2, X_first=np.eye(2)), ValueError,
                 r"X_first has 2 columns but the network takes inputs of size 3",
                 id="hierarchy_kernel-X_first"),
    pytest.param(lambda o: nd.hierarchy_contraction(nd.MLP, X, [np.ones(4)]), TypeError,
                 r"network=MLP \(a class\): pass an nthdyn network instance",
                 id="hierarchy_contraction-network-class"),
    pytest.param(lambda o: nd.hierarchy_contraction(o["net"], X, np.ones(4)), TypeError,
                 r"vectors=an array of shape \(4,\): pass a list of vectors of shape \(4,\).*"
                 r"vectors=\[c\] for K\(3\)\[c\]", id="hierarchy_contraction-one-array"),
    pytest.param(lambda o: nd.hierarchy_contraction(o["net"], X, None), TypeError,
                 r"vectors=None: pass a list of vectors", id="hierarchy_contraction-None"),
    pytest.param(lambda o: nd.hierarchy_contraction(o["net"], X, [np.full(4, NAN)]), ValueError,
                 r"vectors\[0\] has a non-finite entry \(nan\): pass finite vectors",
                 id="hierarchy_contraction-nan"),
    pytest.param(lambda o: nd.hierarchy_contraction(o["net"], X, [["a"] * 4]), TypeError,
                 r"vectors\[0\] has dtype <U1: pass real numbers",
                 id="hierarchy_contraction-strings"),
]


@pytest.mark.parametrize("call, error, message", KERNELS)
def test_kernels(call, error, message, objects):
    _check(call, error, message, objects)


def _prediction():
    return nd.GaussianPrediction(np.zeros(2), np.eye(2))


LIMITS = [
    pytest.param(lambda o: nd.limiting_kernels(o["net"], X, quadrature=nd.GaussHermite),
                 TypeError, r"quadrature=<class .*GaussHermite'>: pass nthdyn\.ClosedForm\(\), "
                            r"nthdyn\.GaussHermite\(nodes=128\)", id="limiting_kernels-class"),
    pytest.param(lambda o: nd.limiting_kernels(o["net"], X, np.eye(2)), ValueError,
                 r"X2 has 2 columns but the network takes inputs of size 3",
                 id="limiting_kernels-X2"),
    pytest.param(lambda o: nd.PolarQuadrature(angular=0), ValueError,
                 r"PolarQuadrature\(angular\)=0: must be an integer >= 1", id="PolarQuadrature"),
    pytest.param(lambda o: nd.gaussian_expectations("tanh", NAN, 0.0, 1.0), ValueError,
                 r"s11 has a non-finite value \(nan\): pass finite covariance entries",
                 id="gaussian_expectations-nan"),
    pytest.param(lambda o: nd.gaussian_expectations("tanh", 1.0, [0.0, NAN], 1.0), ValueError,
                 r"s12 has a non-finite value \(nan\) at index \(1,\): pass finite covariance",
                 id="gaussian_expectations-nan-entry"),
    pytest.param(lambda o: nd.gaussian_expectations("tanh", np.ones(3), np.zeros(2), np.ones(3)),
                 ValueError, r"s11, s12, s22 have shapes \(3,\), \(2,\), \(3,\), which do not "
                             r"broadcast together: pass arrays of one shape",
                 id="gaussian_expectations-shapes"),
    pytest.param(lambda o: nd.limiting_distribution(o["net"], (X, Y), X, -1.0), ValueError,
                 r"t=-1\.0: the training time must be >= 0 \(math\.inf for convergence\)",
                 id="limiting_distribution-t"),
    pytest.param(lambda o: nd.limiting_distribution(o["net"], (X, Y), X, rcond=-1), ValueError,
                 r"rcond=-1: pass a relative cutoff in \[0, 1\) .*e\.g\. rcond=1e-12",
                 id="limiting_distribution-rcond"),
    pytest.param(lambda o: nd.limiting_distribution(_tiny(5), (X, Y), X), ValueError,
                 r"data has inputs of dimension 3 but the network takes in_size=5: build the "
                 r"network with in_size=3", id="limiting_distribution-in_size"),
    pytest.param(lambda o: nd.limiting_distribution("net", (X, Y), X), TypeError,
                 r"network=str: the infinite-width recursions are known for nthdyn\.MLP "
                 r"\(Huang-Yau\) and nthdyn\.JacotMLP", id="limiting_distribution-network"),
    pytest.param(lambda o: _prediction().percentile(150), ValueError,
                 r"q=150: pass a percentile strictly between 0 and 100",
                 id="GaussianPrediction.percentile"),
    pytest.param(lambda o: nd.estimate_kernel_limit(o["net"], X, widths=[2], seeds=[0, 0]),
                 ValueError, r"seeds repeats \[0\]: .*pass distinct seeds, e\.g\. "
                             r"seeds=range\(2\)", id="estimate_kernel_limit-seeds-repeated"),
    pytest.param(lambda o: nd.estimate_kernel_limit(o["net"], X, widths=[], seeds=range(2)),
                 ValueError, r"widths=\[\]: pass at least one width",
                 id="estimate_kernel_limit-widths-empty"),
    pytest.param(lambda o: nd.estimate_kernel_limit(o["net"], X, widths=[4, 0], seeds=range(2)),
                 ValueError, r"widths\[1\]=0: must be an integer >= 1",
                 id="estimate_kernel_limit-widths-0"),
    pytest.param(lambda o: nd.estimate_kernel_limit(o["net"], X, widths=[2], seeds=[0, -1]),
                 ValueError, r"seeds\[1\]=-1: must be an integer >= 0",
                 id="estimate_kernel_limit-seeds-negative"),
    pytest.param(lambda o: nd.estimate_kernel_limit(o["net"], X, widths=[2], seeds=range(2),
                                                    kernel="ntk"),
                 TypeError, r"kernel='ntk': pass a function \(network, X\) -> K\(r\)",
                 id="estimate_kernel_limit-kernel"),
    pytest.param(lambda o: nd.estimate_kernel_limit(o["net"], X, widths=[2], seeds=range(2),
                                                    master_seed=-1),
                 ValueError, r"master_seed=-1: must be an integer >= 0",
                 id="estimate_kernel_limit-master_seed"),
    pytest.param(lambda o: nd.estimate_kernel_limit(o["net"], X, widths=[2], seeds=range(2),
                                                    order=1),
                 ValueError, r"order=1: must be an integer >= 2", id="estimate_kernel_limit-order"),
]


@pytest.mark.parametrize("call, error, message", LIMITS)
def test_limits(call, error, message, objects):
    _check(call, error, message, objects)


def _with_output(problem):
    return nd.EnsembleProblem(problem, seeds=range(2), output=lambda p: {"f": p.network(X)})


ENSEMBLES = [
    pytest.param(lambda o: nd.EnsembleProblem(o["net"], seeds=range(2)), TypeError,
                 r"problem=MLP: pass an nthdyn problem such as GradientFlowProblem",
                 id="EnsembleProblem-network"),
    pytest.param(lambda o: nd.EnsembleProblem(o["flow"], seeds=[]), ValueError,
                 r"seeds=\[\]: pass at least one seed, e\.g\. seeds=range\(16\)",
                 id="EnsembleProblem-seeds-empty"),
    pytest.param(lambda o: nd.EnsembleProblem(o["flow"], axes=["width"]), TypeError,
                 r"axes=\['width'\]: pass a dict \{name: values\}", id="EnsembleProblem-axes-list"),
    pytest.param(lambda o: nd.EnsembleProblem(o["flow"], axes={"depth": []}), ValueError,
                 r"axes\['depth'\] is empty: pass at least one value",
                 id="EnsembleProblem-axis-empty"),
    pytest.param(lambda o: nd.EnsembleProblem(o["flow"], seeds=range(2), master_seed=-1),
                 ValueError, r"master_seed=-1: must be an integer >= 0",
                 id="EnsembleProblem-master_seed"),
    pytest.param(lambda o: nd.EnsembleProblem(o["flow"], seeds=range(2), output=3), TypeError,
                 r"output=3: pass a function of the member problem", id="EnsembleProblem-output"),
    pytest.param(lambda o: nd.EnsembleProblem(o["flow"], widths=8), TypeError,
                 r"widths=8: pass a sequence of widths, e\.g\. widths=\[8\]",
                 id="EnsembleProblem-widths-number"),
    pytest.param(lambda o: nd.EnsembleProblem(o["flow"], seeds=range(2), vmap="no"), TypeError,
                 r"vmap='no': pass True \(.*\) or False", id="EnsembleProblem-vmap-string"),
    pytest.param(lambda o: o["ensemble"].member(seed=7), ValueError,
                 r"member\(seed=7\): pass one of the seeds \[0, 1\]", id="member-unknown-seed"),
    pytest.param(lambda o: nd.EnsembleProblem(
        nd.KernelRegressionProblem(_function_kernel, (X, Y), (0.0, 1.0)), seeds=range(2)),
                 TypeError, r"seeds=\.\.\.: the network NoneType of this KernelRegressionProblem "
                            r"cannot be re-initialised from a key.*axes=\{'network'",
                 id="EnsembleProblem-seeds-without-network"),
    pytest.param(lambda o: nd.solve(o["ensemble"], executor=nd.InProcess), TypeError,
                 r"executor=<class .*InProcess'>: pass nthdyn\.InProcess\(\)",
                 id="solve-ensemble-executor-class"),
    pytest.param(lambda o: nd.solve(o["ensemble"], saveat=[0.0, 2.0]), ValueError,
                 r"saveat: times must lie in tspan=\(0, 1\); got 0 \.\. 2",
                 id="solve-ensemble-saveat"),
    pytest.param(lambda o: nd.solve(o["ensemble"], norm=2), TypeError,
                 r"norm=2: pass a function of a PyTree returning a scalar",
                 id="solve-ensemble-norm"),
    pytest.param(lambda o: nd.solve(_with_output(o["flow"]), member_progress=True), TypeError,
                 r"member_progress=True shows .* Use progress=True for a bar over points",
                 id="solve-ensemble-member_progress-output"),
]


@pytest.mark.parametrize("call, error, message", ENSEMBLES)
def test_ensembles(call, error, message, objects):
    _check(call, error, message, objects)


ERRORS = xr.DataArray([[1.0, 0.5, 0.25], [1.0, 0.4, 0.2]], dims=("seed", "width"),
                      coords={"width": [1, 2, 4]})
FIT = xr.Dataset({"exponent": ("seed", [-1.0, -1.1]), "exponent_low": ("seed", [-1.2, -1.3]),
                  "exponent_high": ("seed", [-0.8, -0.9])}, coords={"seed": [0, 1]})

STATISTICS = [
    pytest.param(lambda o: nd.summary(ERRORS, dim="sample"), ValueError,
                 r"dim='sample' is not a dimension of the data; its dimensions are "
                 r"\['seed', 'width'\]", id="summary-dim"),
    pytest.param(lambda o: nd.summary(ERRORS, quantiles=[5, 50, 95]), ValueError,
                 r"quantiles=\[5, 50, 95\]: pass probabilities in \[0, 1\]",
                 id="summary-quantiles-percent"),
    pytest.param(lambda o: nd.summary(ERRORS, quantiles="median"), ValueError,
                 r"quantiles='median': pass probabilities in \[0, 1\]",
                 id="summary-quantiles-string"),
    pytest.param(lambda o: nd.summary(np.ones(3)), TypeError,
                 r"summary takes a DataArray, e\.g\. summary\(ds\.f, dim='seed'\), not ndarray",
                 id="summary-ndarray"),
    pytest.param(lambda o: nd.fit_power_law(np.ones(3)), TypeError,
                 r"fit_power_law takes a DataArray, e\.g\. fit_power_law\(ds\.err",
                 id="fit_power_law-ndarray"),
    pytest.param(lambda o: nd.fit_power_law(ERRORS.assign_coords(width=["a", "b", "c"])),
                 ValueError, r"the coordinate 'width' has values \['a', 'b', 'c'\]: a power law "
                             r"needs positive numbers as x.*assign_coords\(width=",
                 id="fit_power_law-string-coordinate"),
    pytest.param(lambda o: nd.fit_power_law(ERRORS.assign_coords(width=[0, 1, 2])), ValueError,
                 r"the coordinate 'width' has values \[0, 1, 2\]: a power law needs positive "
                 r"numbers", id="fit_power_law-zero-coordinate"),
    pytest.param(lambda o: nd.fit_power_law(ERRORS, interval="bootstrap", n_boot=10),
                 ValueError, r"n_boot=10: pass an integer >= 100", id="fit_power_law-n_boot"),
    pytest.param(lambda o: nd.fit_power_law(ERRORS, interval="bootstrap", sample_dim="width"),
                 ValueError, r"sample_dim='width' must differ from dim='width'",
                 id="fit_power_law-sample_dim-is-dim"),
    pytest.param(lambda o: nd.fit_power_law(ERRORS, interval="bootstrap", statistic="median"),
                 TypeError, r"statistic='median': pass a function \(da, dim\) -> DataArray",
                 id="fit_power_law-statistic-string"),
    pytest.param(lambda o: nd.fit_power_law(ERRORS, statistic=lambda a, d: a.mean(d)),
                 ValueError, r"statistic=\.\.\. is used with interval='bootstrap' only",
                 id="fit_power_law-statistic-with-t"),
    pytest.param(lambda o: nd.compare_exponents(ERRORS, -1.0), TypeError,
                 r"fit: pass the Dataset returned by fit_power_law", id="compare_exponents-fit"),
    pytest.param(lambda o: nd.compare_exponents(FIT, -1.0, tolerance=-1), ValueError,
                 r"tolerance=-1: pass a number >= 0", id="compare_exponents-tolerance"),
    pytest.param(lambda o: nd.compare_exponents(FIT, "minus one"), TypeError,
                 r"theory='minus one': pass the theoretical exponent as a number",
                 id="compare_exponents-theory-string"),
    pytest.param(lambda o: nd.compare_exponents(FIT, {0: -1.0, 1: -1.0}, dim="foo"), ValueError,
                 r"dim='foo' is not a dimension of the fit; its dimensions are \['seed'\]",
                 id="compare_exponents-dim"),
    pytest.param(lambda o: nd.compare_exponents(FIT, xr.DataArray([1.0, 2.0], dims="foo")),
                 ValueError, r"theory has dimensions \['foo'\] that the fit lacks .*label theory "
                             r"with the fit's dimensions", id="compare_exponents-theory-dims"),
    pytest.param(lambda o: nd.compare_exponents(FIT.isel(seed=0), {0: -1.0}), ValueError,
                 r"theory as a dict needs one dimension to label; the fit has \[\]: pass dim=",
                 id="compare_exponents-dict-for-scalar-fit"),
]


@pytest.mark.parametrize("call, error, message", STATISTICS)
def test_statistics(call, error, message, objects):
    _check(call, error, message, objects)


FILES_AND_EXECUTORS = [
    pytest.param(lambda o: nd.compare(1, 2), TypeError,
                 r"compare\(flow, nth\): flow=int; pass the Solutions of "
                 r"nthdyn\.solve\(GradientFlowProblem", id="compare-not-solutions"),
    pytest.param(lambda o: nd.to_dataset("solution"), TypeError,
                 r"to_dataset takes the Solution returned by nthdyn\.solve\(problem\), not str",
                 id="to_dataset-string"),
    pytest.param(lambda o: nd.write_netcdf(xr.Dataset({"a": 1.0}), 5), TypeError,
                 r"write_netcdf\(path=5\): pass a file path \(str or pathlib\.Path\)",
                 id="write_netcdf-path-number"),
    pytest.param(lambda o: nd.read_netcdf(5), TypeError,
                 r"read_netcdf\(path=5\): pass a file path \(str or pathlib\.Path\)",
                 id="read_netcdf-path-number"),
    pytest.param(lambda o: nd.read_netcdf(xr.Dataset({"a": 1.0})), TypeError,
                 r"read_netcdf\(path=Dataset\): pass a file path", id="read_netcdf-Dataset"),
    pytest.param(lambda o: nd.DaskExecutor(threads_per_worker=0), ValueError,
                 r"threads_per_worker=0: must be an integer >= 1", id="DaskExecutor-threads"),
    pytest.param(lambda o: nd.DaskExecutor("tcp://127.0.0.1:8786", timeout="20s"), TypeError,
                 r"timeout='20s': must be a positive number", id="DaskExecutor-timeout-string"),
    pytest.param(lambda o: nd.DaskExecutor(8786), TypeError,
                 r"address=8786: pass a scheduler address string such as "
                 r"'tcp://127\.0\.0\.1:8786'", id="DaskExecutor-address-number"),
    pytest.param(lambda o: nd.DaskExecutor(client="c"), TypeError,
                 r"client='c': pass a dask\.distributed\.Client, or leave client=None",
                 id="DaskExecutor-client"),
]


@pytest.mark.parametrize("call, error, message", FILES_AND_EXECUTORS)
def test_files_and_executors(call, error, message, objects):
    _check(call, error, message, objects)


def test_read_netcdf_of_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"is a folder; pass a \.nc file"):
        nd.read_netcdf(tmp_path)


def test_solution_at_a_time_that_is_not_a_number(net):
    sol = nd.solve(nd.GradientDescentProblem(net, (X, Y), steps=2, learning_rate=0.1))
    with pytest.raises(TypeError, match=r"t='a': pass a time or an array of times in the saved "
                                        r"span \[0\.0, 2\.0\]"):
        sol("a")


# -- discrete gradient descent (Taylor kernels, discrete hierarchy, phases) ----

RELU = nd.MLP(3, 8, 1, "relu", key=0)

DISCRETE = [
    pytest.param(lambda o: nd.DiscreteNTHProblem(o["net"], (X, Y), 1, 0.1, 3), ValueError,
                 r"order=1: must be an integer >= 2", id="DiscreteNTHProblem-order-1"),
    pytest.param(lambda o: nd.DiscreteNTHProblem(o["net"], (X, Y), 5, 0.1, 3), ValueError,
                 r"order=5: the discrete hierarchy is closed here up to order 4.*Use order=2, 3 "
                 r"or 4", id="DiscreteNTHProblem-order-5"),
    pytest.param(lambda o: nd.DiscreteNTHProblem(o["net"], (X, Y), 2, 0.0, 3), ValueError,
                 r"learning_rate=0\.0: must be a finite number > 0",
                 id="DiscreteNTHProblem-eta-0"),
    pytest.param(lambda o: nd.DiscreteNTHProblem(o["net"], (X, Y), 2, -1.0, 3), ValueError,
                 r"learning_rate=-1\.0: must be a finite number > 0",
                 id="DiscreteNTHProblem-eta-negative"),
    pytest.param(lambda o: nd.DiscreteNTHProblem(o["net"], (X, Y), 2, 0.1, 0), ValueError,
                 r"steps=0: must be an integer >= 1", id="DiscreteNTHProblem-steps-0"),
    pytest.param(lambda o: nd.DiscreteNTHProblem(RELU, (X, Y), 3, 0.1, 3), ValueError,
                 r"order=3 needs a smooth activation, but the network uses relu",
                 id="DiscreteNTHProblem-relu-order-3"),
    pytest.param(lambda o: nd.solve(nd.DiscreteNTHProblem(o["net"], (X, Y), 2, 0.1, 3),
                                    nd.Tsit5()), TypeError,
                 r"solver=Tsit5\(\): DiscreteNTHProblem is a discrete map with one method",
                 id="DiscreteNTHProblem-solver"),
    pytest.param(lambda o: nd.solve(nd.DiscreteNTHProblem(o["net"], (X, Y), 2, 0.1, 3),
                                    kernels="K"), TypeError,
                 r"kernels=str: pass the result of nthdyn\.initial_discrete_kernels",
                 id="DiscreteNTHProblem-kernels"),
    pytest.param(lambda o: nd.solve(nd.DiscreteNTHProblem(o["net"], (X, Y), 2, 0.1, 3),
                                    rtol=1e-8), TypeError,
                 r"got \['rtol'\]: these control an ODE solver's steps", id="DiscreteNTHProblem-rtol"),
    pytest.param(lambda o: nd.taylor_kernel(o["net"], X, 1), ValueError,
                 r"order=1: must be an integer >= 2", id="taylor_kernel-order-1"),
    pytest.param(lambda o: nd.taylor_kernel(RELU, X, 3), ValueError,
                 r"order=3 needs a smooth activation, but the network uses relu",
                 id="taylor_kernel-relu"),
    pytest.param(lambda o: nd.taylor_kernel(o["net"], X, 3, method="dense"), ValueError,
                 r"method='dense': use 'auto', 'structured' or 'jacobian'",
                 id="taylor_kernel-method"),
    pytest.param(lambda o: nd.taylor_kernel(o["net"], X, 4, max_bytes=100), MemoryError,
                 r"calK\(4\) on 4 x 4\^3 points would take", id="taylor_kernel-max-bytes"),
    pytest.param(lambda o: nd.taylor_contraction(o["net"], X, np.ones(4)), TypeError,
                 r"vectors=an array of shape \(4,\): pass a list of vectors of shape \(4,\).*"
                 r"\[c\] for calK\(3\)\[c\]",
                 id="taylor_contraction-array"),
    pytest.param(lambda o: nd.taylor_contraction(o["net"], X, [np.ones(3)]), ValueError,
                 r"vectors\[0\] has shape \(3,\): it contracts a slot over the 4 training inputs",
                 id="taylor_contraction-shape"),
    pytest.param(lambda o: nd.output_update(o["net"], X, Y, 0), ValueError,
                 r"order=0: must be an integer >= 1", id="output_update-order-0"),
    pytest.param(lambda o: nd.output_update(RELU, X, Y, 2), ValueError,
                 r"order \+ 1=3 needs a smooth activation", id="output_update-relu"),
    pytest.param(lambda o: nd.output_update(o["net"], X, np.r_[1.0, np.nan, 0, 0], 2), ValueError,
                 r"r has a non-finite entry \(nan\)", id="output_update-nan"),
    pytest.param(lambda o: nd.ntk_lambda_max(o["net"], X, iterations=9), ValueError,
                 r"iterations=9: the NTK on 4 inputs has 4 eigenvalues; pass at most 4",
                 id="ntk_lambda_max-iterations"),
    pytest.param(lambda o: nd.ntk_lambda_max(o["net"], X, iterations=0), ValueError,
                 r"iterations=0: must be an integer >= 1", id="ntk_lambda_max-iterations-0"),
    pytest.param(lambda o: nd.classify_phase([1.0], 1.0, 0.1, 4), ValueError,
                 r"loss has shape \(1,\): pass the losses of one run at two or more saved steps",
                 id="classify_phase-short"),
    pytest.param(lambda o: nd.classify_phase([1.0, 0.5], 1.0, 0.0, 4), ValueError,
                 r"learning_rate=0\.0: must be a finite number > 0", id="classify_phase-eta"),
    pytest.param(lambda o: nd.phase_report(nd.solve(o["nth"])), TypeError,
                 r"solution=NTHProblem: pass the Solution of a GradientDescentProblem",
                 id="phase_report-nth"),
    pytest.param(lambda o: nd.phase_report(nd.solve(o["descent"])), ValueError,
                 r"solution has neither saved NTKs nor lambda_max: solve the "
                 r"GradientDescentProblem with save_ntk=True or save_lambda_max=True",
                 id="phase_report-no-ntk"),
    pytest.param(lambda o: nd.phase_report(nd.solve(o["descent"], saveat=[1, 3], save_ntk=True)),
                 ValueError, r"solution's first saved step is 1: save step 0 too",
                 id="phase_report-no-step-0"),
    pytest.param(lambda o: nd.solve(o["descent"], save_lambda_max="yes"), TypeError,
                 r"save_lambda_max='yes': pass True or False", id="descent-save_lambda_max"),
]


@pytest.mark.parametrize("call, error, message", DISCRETE)
def test_discrete(call, error, message, objects):
    _check(call, error, message, objects)


# -- two-layer networks, weight decay, noisy flows (paper 002) ------------------------

TWO = nd.TwoLayer(3, 4, alpha=1.0, key=0)
NOISY = nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), temperature=0.1)

TWO_LAYER = [
    pytest.param(lambda o: nd.TwoLayer(3, 4, alpha=0.0, key=0), ValueError,
                 r"alpha=0\.0: must be a finite number > 0", id="TwoLayer-alpha-0"),
    pytest.param(lambda o: nd.TwoLayer(3, 4, alpha=-1.0, key=0), ValueError,
                 r"alpha=-1\.0: must be a finite number > 0", id="TwoLayer-alpha-negative"),
    pytest.param(lambda o: nd.TwoLayer(3, 4, key=0), TypeError,
                 r"missing 1 required keyword-only argument: 'alpha'", id="TwoLayer-no-alpha"),
    pytest.param(lambda o: nd.TwoLayer(3, 4, alpha=1.0, train="theta", key=0), ValueError,
                 r"train='theta': pass 'all' \(train theta and u\) or 'readout'",
                 id="TwoLayer-train"),
    pytest.param(lambda o: nd.TwoLayer(3, 5, alpha=1.0, symmetric=True, key=0), ValueError,
                 r"symmetric=True with width=5: .* pass an even width", id="TwoLayer-symmetric-odd"),
    pytest.param(lambda o: nd.TwoLayer.from_weights(np.ones((4, 3)), np.ones(5), alpha=1.0),
                 ValueError, r"u has shape \(5,\); expected \(4\)", id="TwoLayer-from_weights-u"),
    pytest.param(lambda o: nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), weight_decay=-0.1),
                 ValueError, r"weight_decay=-0\.1: must be a finite number >= 0",
                 id="flow-weight_decay-negative"),
    pytest.param(lambda o: nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), weight_decay=(1, 2, 3)),
                 ValueError, r"weight_decay=\(1, 2, 3\) has 3 entries: pass a number or one "
                             r"lambda >= 0 per linear map of TwoLayer \(2 maps.*TwoLayer: "
                             r"\(theta, u\)", id="flow-weight_decay-length"),
    pytest.param(lambda o: nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), time_scale=(1.0, 0.0)),
                 ValueError, r"time_scale\[1\]=0\.0: must be a finite number > 0",
                 id="flow-time_scale-per-map"),
    pytest.param(lambda o: nd.GradientDescentProblem(TWO, (X, Y), 2, 0.1, weight_decay=(0.1, -1)),
                 ValueError, r"weight_decay\[1\]=-1\.0: must be a finite number >= 0",
                 id="descent-weight_decay-entry"),
    pytest.param(lambda o: nd.solve(nd.GradientDescentProblem(TWO, (X, Y), 2, 0.1, weight_decay=0.1),
                                    nd.LowRankGradientDescent()), TypeError,
                 r"LowRankGradientDescent\(\) with weight_decay=0\.1: .*Use "
                 r"nthdyn\.GradientDescent\(\)", id="descent-low-rank-weight-decay"),
    pytest.param(lambda o: nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), time_scale=0),
                 ValueError, r"time_scale=0\.0: must be a finite number > 0", id="flow-time_scale-0"),
    pytest.param(lambda o: nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), time_scale="mf"),
                 ValueError, r"time_scale='mf': pass a number c > 0 or 'mean_field'",
                 id="flow-time_scale-string"),
    pytest.param(lambda o: nd.GradientFlowProblem(o["flow"].network, (X, Y), (0.0, 1.0),
                                                  center="yes"), TypeError,
                 r"center='yes': pass True", id="flow-center"),
    pytest.param(lambda o: nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), temperature=-0.1),
                 ValueError, r"temperature=-0\.1: must be a finite number >= 0",
                 id="flow-temperature-negative"),
    pytest.param(lambda o: nd.GradientFlowProblem(TWO, (X, Y), (0.0, 1.0), noise_key=1),
                 ValueError, r"noise_key=1 was given but temperature=0: the flow has no noise",
                 id="flow-noise_key-without-noise"),
    pytest.param(lambda o: nd.GradientFlowProblem(
        nd.TwoLayer.from_weights(TWO.theta, TWO.u, alpha=1.0), (X, Y), (0.0, 1.0), temperature=0.1),
                 ValueError, r"temperature=0\.1: the noise needs a key, .*Pass noise_key=0",
                 id="flow-noise-given-weights"),
    pytest.param(lambda o: nd.solve(NOISY, nd.Tsit5(), dt0=0.1), TypeError,
                 r"solver=Tsit5\(\): with temperature=0\.1 the flow is an SDE.*this is an ODE "
                 r"solver.*diffrax\.Euler\(\)", id="noisy-flow-ODE-solver"),
    pytest.param(lambda o: nd.solve(NOISY, nd.Euler()), ValueError,
                 r"temperature=0\.1: the Langevin flow is solved with a fixed step; pass dt0=",
                 id="noisy-flow-no-dt0"),
    pytest.param(lambda o: nd.solve(o["flow"], brownian_tol=1e-3), TypeError,
                 r"brownian_tol=0\.001 is an option of the noisy flow \(temperature > 0\); this "
                 r"flow is deterministic", id="deterministic-flow-brownian_tol"),
    pytest.param(lambda o: nd.solve(o["flow"], nd.Euler()), TypeError,
                 r"pass an adaptive diffrax solver", id="deterministic-flow-SDE-solver"),
    pytest.param(lambda o: nd.solve(o["flow"], save_regime="yes"), TypeError,
                 r"save_regime='yes': pass True or False", id="flow-save_regime"),
    pytest.param(lambda o: nd.wasted_fraction(np.ones(3), threshold=0.0), ValueError,
                 r"threshold=0\.0: must be > 0", id="wasted_fraction-threshold"),
]


@pytest.mark.parametrize("call, error, message", TWO_LAYER)
def test_two_layer_and_noise(call, error, message, objects):
    _check(call, error, message, objects)


DIGITS = [
    pytest.param(lambda o: nd.digits_data(0, key=0), ValueError,
                 r"n=0: must be an integer >= 1", id="digits_data-n-0"),
    pytest.param(lambda o: nd.digits_data(400, key=0, classes=(0, 1)), ValueError,
                 r"n=400: the digits data set has only 360 images of classes \(0, 1\); pass "
                 r"n <= 360 or more classes", id="digits_data-n-too-large"),
    pytest.param(lambda o: nd.digits_data(4, key=0, classes=(3,)), ValueError,
                 r"classes=\(3,\): pass two or more distinct digits from 0 to 9",
                 id="digits_data-one-class"),
    pytest.param(lambda o: nd.digits_data(4, key=0, classes=(3, 10)), ValueError,
                 r"classes=\(3, 10\): pass two or more distinct digits", id="digits_data-class-10"),
    pytest.param(lambda o: nd.digits_data(4, key=0, classes=(3, 3)), ValueError,
                 r"classes=\(3, 3\): pass two or more distinct", id="digits_data-repeated-class"),
    pytest.param(lambda o: nd.digits_data(4, key=0, classes=5), ValueError,
                 r"classes=5: pass two or more distinct digits", id="digits_data-classes-int"),
    pytest.param(lambda o: nd.digits_data(4, key=0, labels="onehot"), ValueError,
                 r"labels='onehot': use 'standardized', 'digit', or a function",
                 id="digits_data-labels"),
    pytest.param(lambda o: nd.digits_data(4, key=0, labels=lambda k: k[:2]), ValueError,
                 r"y has shape \(2,\) but X has 4 rows", id="digits_data-labels-function-shape"),
    pytest.param(lambda o: nd.digits_data(4, key=-1), ValueError,
                 r"key=-1: an integer seed must be >= 0", id="digits_data-key-negative"),
]


@pytest.mark.parametrize("call, error, message", DIGITS)
def test_digits_data(call, error, message, objects):
    _check(call, error, message, objects)


# -- factored Runge-Kutta stages of the flow ----------------------------------


def test_factored_is_a_flag(problem):
    with pytest.raises(TypeError, match=r"factored='yes': pass None \(automatic, by size\), "
                                        r"True or False"):
        nd.solve(problem, factored="yes")


def test_factored_needs_low_rank_stages(net):
    decayed = nd.GradientFlowProblem(net, (X, Y), (0.0, 1.0), weight_decay=0.1)
    with pytest.raises(ValueError, match=r"factored=True: weight decay makes every stage full "
                                         r"rank\. Factored stages need a layered network"):
        nd.solve(decayed, factored=True)
    problem = nd.GradientFlowProblem(net, (X, Y), (0.0, 1.0))
    with pytest.raises(ValueError, match=r"factored=True: solver=Kvaerno5\(\) is not an explicit "
                                         r"Runge-Kutta method.*use factored=None"):
        nd.solve(problem, nd.Kvaerno5(), factored=True)

"""nthdyn: training dynamics of finite-width neural networks.

The exact gradient flow, the Neural Tangent Kernel and the Neural Tangent
Hierarchy of Huang & Yau (ICML 2020), solved with diffrax and returned as
xarray Datasets. Importing nthdyn turns on JAX's float64 mode: results are
compared with theory down to 1e-10 and below.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from ._activation import (
    AbstractActivation as AbstractActivation,
    Erf as Erf,
    Gelu as Gelu,
    Identity as Identity,
    Relu as Relu,
    Sigmoid as Sigmoid,
    Softplus as Softplus,
    Tanh as Tanh,
)
from ._case import case_parser as case_parser, run_case as run_case
from ._data import (
    TrainingSet as TrainingSet,
    circle_data as circle_data,
    digits_data as digits_data,
    product_teacher as product_teacher,
    sigmoid_teacher_data as sigmoid_teacher_data,
    sphere_data as sphere_data,
)
from ._ensemble import (
    AbstractExecutor as AbstractExecutor,
    DaskExecutor as DaskExecutor,
    EnsembleProblem as EnsembleProblem,
    InProcess as InProcess,
    SweepConfigError as SweepConfigError,
    member_key as member_key,
    open_sweep as open_sweep,
)
from ._io import (
    compare as compare,
    provenance as provenance,
    read_netcdf as read_netcdf,
    to_dataset as to_dataset,
    versions as versions,
    write_netcdf as write_netcdf,
)
from ._kernels import (
    contract_last as contract_last,
    hierarchy_contraction as hierarchy_contraction,
    hierarchy_kernel as hierarchy_kernel,
    ntk as ntk,
    ntk_jacobian as ntk_jacobian,
    ntk_structured as ntk_structured,
)
from ._limits import (
    AbstractQuadrature as AbstractQuadrature,
    ClosedForm as ClosedForm,
    GaussHermite as GaussHermite,
    GaussianPrediction as GaussianPrediction,
    LimitingKernels as LimitingKernels,
    PolarQuadrature as PolarQuadrature,
    estimate_kernel_limit as estimate_kernel_limit,
    gaussian_expectations as gaussian_expectations,
    limiting_distribution as limiting_distribution,
    limiting_kernels as limiting_kernels,
)
from ._network import (
    AbstractLayeredNetwork as AbstractLayeredNetwork,
    AbstractNetwork as AbstractNetwork,
    JacotMLP as JacotMLP,
    LowRankMatrix as LowRankMatrix,
    MLP as MLP,
    TwoLayer as TwoLayer,
    parameter_count as parameter_count,
)
from ._problems import (
    AbstractKernel as AbstractKernel,
    AbstractProblem as AbstractProblem,
    Eigendecomposition as Eigendecomposition,
    FiniteNTK as FiniteNTK,
    FunctionKernel as FunctionKernel,
    GradientDescent as GradientDescent,
    GradientDescentProblem as GradientDescentProblem,
    GradientFlowProblem as GradientFlowProblem,
    HierarchyKernels as HierarchyKernels,
    KernelRegressionProblem as KernelRegressionProblem,
    LimitingNTK as LimitingNTK,
    LowRankGradientDescent as LowRankGradientDescent,
    NTHProblem as NTHProblem,
    choose_solver as choose_solver,
    initial_kernels as initial_kernels,
    low_rank_descent as low_rank_descent,
    remake as remake,
)
from ._problems import (  # two-layer regimes (paper 002)
    Objective as Objective,
    particles as particles,
    relative_movement as relative_movement,
    wasted_fraction as wasted_fraction,
)
from ._solve import (
    RESULTS as RESULTS,
    RETCODES as RETCODES,
    Float64Warning as Float64Warning,
    Solution as Solution,
    SolverError as SolverError,
    solve as solve,
)
from ._stats import (
    compare_exponents as compare_exponents,
    fit_power_law as fit_power_law,
    summary as summary,
)

from ._kernels import (  # discrete gradient descent, eq. (29)
    output_taylor_kernel as output_taylor_kernel,
    output_update as output_update,
    symmetrized_output_kernel as symmetrized_output_kernel,
    taylor_contraction as taylor_contraction,
    taylor_kernel as taylor_kernel,
)
from ._problems import (
    DiscreteKernels as DiscreteKernels,
    DiscreteNTHProblem as DiscreteNTHProblem,
    initial_discrete_kernels as initial_discrete_kernels,
)
from ._spectrum import (
    PHASES as PHASES,
    PhaseReport as PhaseReport,
    classify_phase as classify_phase,
    lanczos_max as lanczos_max,
    ntk_lambda_max as ntk_lambda_max,
    phase_report as phase_report,
)

__version__ = "0.1.0"

#: diffrax's solvers, re-exported; diffrax is imported on first use (`_lazy.py`).
_SOLVERS = ("Dopri5", "Dopri8", "Kvaerno5", "Tsit5",
            "Euler", "Heun", "SRA1")  # the last three: SDE solvers (the noisy flow)


def __getattr__(name: str):
    if name in _SOLVERS:
        import diffrax

        return getattr(diffrax, name)
    raise AttributeError(f"module 'nthdyn' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SOLVERS))

"""nthdyn: training dynamics of finite-width neural networks.

The exact gradient flow, the Neural Tangent Kernel and the Neural Tangent
Hierarchy of Huang & Yau (ICML 2020), solved with diffrax and returned as
xarray Datasets. Importing nthdyn turns on JAX's float64 mode: results are
compared with theory down to 1e-10 and below.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from diffrax import Dopri5 as Dopri5, Dopri8 as Dopri8, Kvaerno5 as Kvaerno5, Tsit5 as Tsit5

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
    product_teacher as product_teacher,
    sphere_data as sphere_data,
)
from ._ensemble import (
    ENSEMBLE_RETCODES as ENSEMBLE_RETCODES,
    EnsembleProblem as EnsembleProblem,
    member_key as member_key,
)
from ._executor import (
    AbstractExecutor as AbstractExecutor,
    DaskExecutor as DaskExecutor,
    InProcess as InProcess,
)
from ._io import (
    provenance as provenance,
    read_netcdf as read_netcdf,
    to_dataset as to_dataset,
    versions as versions,
    write_netcdf as write_netcdf,
)
from ._hierarchy import (
    contract_last as contract_last,
    hierarchy_contraction as hierarchy_contraction,
    hierarchy_kernel as hierarchy_kernel,
)
from ._kernels import ntk as ntk, ntk_jacobian as ntk_jacobian, ntk_structured as ntk_structured
from ._limits import (
    ClosedForm as ClosedForm,
    GaussHermite as GaussHermite,
    LimitingKernels as LimitingKernels,
    PolarQuadrature as PolarQuadrature,
    estimate_kernel_limit as estimate_kernel_limit,
    gaussian_expectations as gaussian_expectations,
    limiting_kernels as limiting_kernels,
)
from ._network import (
    AbstractLayeredNetwork as AbstractLayeredNetwork,
    AbstractNetwork as AbstractNetwork,
    JacotMLP as JacotMLP,
    MLP as MLP,
    parameter_count as parameter_count,
)
from ._nth import (
    NTHProblem as NTHProblem,
    choose_solver as choose_solver,
    compare as compare,
    initial_kernels as initial_kernels,
)
from ._problems import (
    AbstractProblem as AbstractProblem,
    GradientDescentProblem as GradientDescentProblem,
    GradientFlowProblem as GradientFlowProblem,
    remake as remake,
)
from ._regression import (
    AbstractKernel as AbstractKernel,
    Eigendecomposition as Eigendecomposition,
    FiniteNTK as FiniteNTK,
    FunctionKernel as FunctionKernel,
    GaussianPrediction as GaussianPrediction,
    KernelRegressionProblem as KernelRegressionProblem,
    LimitingNTK as LimitingNTK,
    limiting_distribution as limiting_distribution,
)
from ._solution import RETCODES as RETCODES, Solution as Solution, SolverError as SolverError
from ._solve import Float64Warning as Float64Warning, solve as solve
from ._stats import (
    compare_exponents as compare_exponents,
    fit_power_law as fit_power_law,
    summary as summary,
)
from ._sweep import SweepConfigError as SweepConfigError, open_sweep as open_sweep
from ._wide import low_rank_descent as low_rank_descent

__version__ = "0.1.0"

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
from ._io import (
    provenance as provenance,
    read_netcdf as read_netcdf,
    to_dataset as to_dataset,
    versions as versions,
    write_netcdf as write_netcdf,
)
from ._kernels import ntk as ntk, ntk_jacobian as ntk_jacobian, ntk_structured as ntk_structured
from ._network import (
    AbstractLayeredNetwork as AbstractLayeredNetwork,
    AbstractNetwork as AbstractNetwork,
    JacotMLP as JacotMLP,
    MLP as MLP,
    parameter_count as parameter_count,
)
from ._problems import (
    AbstractProblem as AbstractProblem,
    GradientDescentProblem as GradientDescentProblem,
    GradientFlowProblem as GradientFlowProblem,
    remake as remake,
)
from ._solution import RETCODES as RETCODES, Solution as Solution, SolverError as SolverError
from ._solve import Float64Warning as Float64Warning, solve as solve

__version__ = "0.1.0"

"""Problems: the gradient flow, gradient descent, the truncated hierarchy and kernel
regression, each feeding the one solve core."""

from ._base import AbstractProblem as AbstractProblem, remake as remake
from ._descent import (
    GradientDescent as GradientDescent,
    GradientDescentProblem as GradientDescentProblem,
    LowRankGradientDescent as LowRankGradientDescent,
    low_rank_descent as low_rank_descent,
)
from ._discrete_nth import (
    DiscreteKernels as DiscreteKernels,
    DiscreteNTHProblem as DiscreteNTHProblem,
    initial_discrete_kernels as initial_discrete_kernels,
)
from ._flow import GradientFlowProblem as GradientFlowProblem
from ._nth import (
    HierarchyKernels as HierarchyKernels,
    NTHProblem as NTHProblem,
    choose_solver as choose_solver,
    initial_kernels as initial_kernels,
)
from ._regression import (
    AbstractKernel as AbstractKernel,
    Eigendecomposition as Eigendecomposition,
    FiniteNTK as FiniteNTK,
    FunctionKernel as FunctionKernel,
    KernelRegressionProblem as KernelRegressionProblem,
    LimitingNTK as LimitingNTK,
)
from ._objective import Objective as Objective
from ._regimes import (
    particles as particles,
    relative_movement as relative_movement,
    wasted_fraction as wasted_fraction,
)

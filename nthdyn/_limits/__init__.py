"""Infinite-width kernels: Gaussian expectations, the layer recursions, estimates
from ensembles, and the distribution of the trained infinite-width network."""

from ._distribution import (
    GaussianPrediction as GaussianPrediction,
    limiting_distribution as limiting_distribution,
)
from ._estimate import estimate_kernel_limit as estimate_kernel_limit
from ._quadrature import (
    AbstractQuadrature as AbstractQuadrature,
    ClosedForm as ClosedForm,
    GaussHermite as GaussHermite,
    PolarQuadrature as PolarQuadrature,
    gaussian_expectations as gaussian_expectations,
)
from ._recursion import LimitingKernels as LimitingKernels, limiting_kernels as limiting_kernels

"""Kernels: the NTK `K2` (eq. (7)), the hierarchy kernels `K(r)` (eq. (10)) and the
Taylor kernels of discrete gradient descent `calK(r)` (eq. (29))."""

from ._arguments import (
    MAX_KERNEL_BYTES as MAX_KERNEL_BYTES,
    base_kernel as base_kernel,
    check_kernel_size as check_kernel_size,
    check_order as check_order,
    kernel_bytes as kernel_bytes,
)
from ._hierarchy import (
    contract_last as contract_last,
    derived_contraction as derived_contraction,
    derived_kernel as derived_kernel,
    factoring_chosen as factoring_chosen,
    hierarchy_contraction as hierarchy_contraction,
    hierarchy_kernel as hierarchy_kernel,
)
from ._ntk import (
    layer_factors as layer_factors,
    check_network as check_network,
    ntk as ntk,
    ntk_jacobian as ntk_jacobian,
    ntk_structured as ntk_structured,
    ntk_traced as ntk_traced,
)
from ._taylor import (
    output_taylor_kernel as output_taylor_kernel,
    output_taylor_kernel_traced as output_taylor_kernel_traced,
    output_update as output_update,
    symmetrized_output_kernel as symmetrized_output_kernel,
    taylor_contraction as taylor_contraction,
    taylor_kernel as taylor_kernel,
)

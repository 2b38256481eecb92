"""Kernels: the NTK `K2` (eq. (7)) and the hierarchy kernels `K(r)` (eq. (10))."""

from ._hierarchy import (
    MAX_KERNEL_BYTES as MAX_KERNEL_BYTES,
    check_order as check_order,
    contract_last as contract_last,
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

"""Networks: the abstract families and their members (`MLP`, `JacotMLP`, `TwoLayer`)."""

from ._base import (
    AbstractLayeredNetwork as AbstractLayeredNetwork,
    AbstractNetwork as AbstractNetwork,
    LowRankMatrix as LowRankMatrix,
    as_key as as_key,
    densify as densify,
    low_rank as low_rank,
    low_rank_pays as low_rank_pays,
    parameter_count as parameter_count,
    trainable as trainable,
)
from ._jacot import JacotMLP as JacotMLP
from ._mlp import MLP as MLP
from ._two_layer import TwoLayer as TwoLayer

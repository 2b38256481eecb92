"""Activation functions, each knowing whether it is smooth.

The Neural Tangent Hierarchy needs derivatives of every order of the activation
(Huang & Yau, Assumption 2.1): kernels K(r) with r >= 3 contain sigma^(r-1).
An activation that is not smooth (relu) only has the NTK K2.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class AbstractActivation(eqx.Module):
    """An elementwise activation `sigma`.

    Subclasses set `smooth` (derivatives of every order are bounded, Huang & Yau
    Assumption 2.1) and implement `__call__`.
    """

    smooth: ClassVar[bool]

    @abc.abstractmethod
    def __call__(self, x: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__.lower()


class Tanh(AbstractActivation):
    """`tanh(x)`."""

    smooth: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.tanh(x)


class Sigmoid(AbstractActivation):
    """`1 / (1 + exp(-x))`."""

    smooth: ClassVar[bool] = True

    def __call__(self, x):
        return jax.nn.sigmoid(x)


class Erf(AbstractActivation):
    """The error function `erf(x)` (closed-form infinite-width kernels exist)."""

    smooth: ClassVar[bool] = True

    def __call__(self, x):
        return jax.scipy.special.erf(x)


class Softplus(AbstractActivation):
    """`log(1 + exp(a x)) / a` with sharpness `a > 0`; tends to relu as `a -> inf`
    (Huang & Yau, after Assumption 2.1)."""

    smooth: ClassVar[bool] = True
    sharpness: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not (isinstance(self.sharpness, (int, float)) and 0 < self.sharpness < math.inf):
            raise ValueError(
                f"Softplus(sharpness={self.sharpness!r}): the sharpness must be a "
                "positive number, e.g. Softplus(sharpness=4.0)"
                + ("; an infinite sharpness is relu: use nthdyn.Relu()."
                   if self.sharpness == math.inf else ".")
            )

    def __call__(self, x):
        return jax.nn.softplus(self.sharpness * x) / self.sharpness

    @property
    def name(self) -> str:
        return f"softplus(sharpness={self.sharpness:g})"


class Gelu(AbstractActivation):
    """`x Phi(x)` with the exact Gaussian CDF `Phi`."""

    smooth: ClassVar[bool] = True

    def __call__(self, x):
        return jax.nn.gelu(x, approximate=False)


class Relu(AbstractActivation):
    """`max(x, 0)`. Not smooth: it has the NTK but no higher kernels."""

    smooth: ClassVar[bool] = False

    def __call__(self, x):
        return jax.nn.relu(x)


class Identity(AbstractActivation):
    """`x`: with it a network is a (deep) linear network."""

    smooth: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.asarray(x)


_BY_NAME: dict[str, type[AbstractActivation]] = {
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "erf": Erf,
    "softplus": Softplus,
    "gelu": Gelu,
    "relu": Relu,
    "identity": Identity,
}


def as_activation(activation: str | AbstractActivation) -> AbstractActivation:
    """Turn a name (`"tanh"`, `"softplus"`, ...) or an activation object into an
    activation object."""
    if isinstance(activation, AbstractActivation):
        return activation
    if isinstance(activation, str) and activation.lower() in _BY_NAME:
        return _BY_NAME[activation.lower()]()
    raise ValueError(
        f"activation={activation!r} is not known. Use one of "
        f"{sorted(_BY_NAME)} or an instance such as nthdyn.Softplus(sharpness=4.0)."
    )

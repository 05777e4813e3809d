"""Priors for composite problems: a value and a proximal map each (pure functions of arrays)."""

from ._base import AbstractPrior as AbstractPrior
from ._l1 import L1 as L1, soft_threshold as soft_threshold
from ._tv1d import TV1D as TV1D
from ._tv2d import TV2D as TV2D

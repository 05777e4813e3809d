"""Priors for composite problems: a value and a proximal map each (pure functions of arrays)."""

from ._base import AbstractAnalysisPrior as AbstractAnalysisPrior, AbstractPrior as AbstractPrior
from ._box import Box as Box, NonNegative as NonNegative
from ._elastic_net import ElasticNet as ElasticNet
from ._gaussian import Gaussian as Gaussian
from ._group_l1 import GroupL1 as GroupL1
from ._l1 import L1 as L1, soft_threshold as soft_threshold
from ._sum import Sum as Sum
from ._tv1d import TV1D as TV1D
from ._tv2d import TV2D as TV2D

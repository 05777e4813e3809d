"""Priors for composite problems: a value and a proximal map each (pure functions of arrays)."""

from ._base import AbstractPrior as AbstractPrior

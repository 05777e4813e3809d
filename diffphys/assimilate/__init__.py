"""Variational data assimilation: 4D-Var written as whitened residuals, and solvers for it."""

from ._fourdvar import (
    AbstractControl as AbstractControl,
    InitialState as InitialState,
    Parameter as Parameter,
    StrongConstraint4DVar as StrongConstraint4DVar,
)
from ._minimize import MinimizeResult as MinimizeResult, minimize as minimize

"""Variational data assimilation: 4D-Var written as whitened residuals, and its solves on the solver core."""

from ._cycling import (
    CycledAnalysis as CycledAnalysis,
    CycledTwin as CycledTwin,
    cycled_4dvar as cycled_4dvar,
    cycled_twin_experiment as cycled_twin_experiment,
)
from ._fourdvar import (
    AbstractControl as AbstractControl,
    InitialState as InitialState,
    Joint as Joint,
    Parameter as Parameter,
    StrongConstraint4DVar as StrongConstraint4DVar,
)
from ._gauss_newton import (
    FOURDVAR_ADJOINT as FOURDVAR_ADJOINT,
    FOURDVAR_MODE as FOURDVAR_MODE,
    gauss_newton as gauss_newton,
)
from ._posterior import Posterior as Posterior, posterior as posterior
from ._weak_constraint import WeakConstraint4DVar as WeakConstraint4DVar

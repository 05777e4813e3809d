"""Variational data assimilation: 4D-Var written as whitened residuals, and solvers for it."""

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
    GaussNewton as GaussNewton,
    GaussNewtonResult as GaussNewtonResult,
    UnrolledGaussNewton as UnrolledGaussNewton,
    gauss_newton as gauss_newton,
    gauss_newton_direction as gauss_newton_direction,
)
from ._minimize import MinimizeResult as MinimizeResult, minimize as minimize
from ._train_unrolled import (
    TrainingHistory as TrainingHistory,
    stack_problems as stack_problems,
    train_unrolled as train_unrolled,
    unrolled_loss as unrolled_loss,
)
from ._weak_constraint import WeakConstraint4DVar as WeakConstraint4DVar

"""The problem-agnostic iterative core: problems, solvers, one driver (converged or unrolled), results, progress."""

from .._solution import RESULTS as RESULTS, Solution as Solution
from ._admm import ADMM as ADMM, ADMMStep as ADMMStep
from ._amp import AMP as AMP
from ._base import AbstractIterativeSolver as AbstractIterativeSolver
from ._gauss_newton import DampedStep as DampedStep, GaussNewton as GaussNewton
from ._iterate import iterate as iterate, stack_params as stack_params
from ._mode import AbstractMode as AbstractMode, Converged as Converged, Unrolled as Unrolled
from ._optax import LBFGS as LBFGS, AbstractOptaxSolver as AbstractOptaxSolver, Adam as Adam
from ._primal_dual import PDHG as PDHG, PrimalDualStep as PrimalDualStep
from ._proximal_gradient import (
    FISTA as FISTA,
    ISTA as ISTA,
    ProximalStep as ProximalStep,
    lipschitz_estimate as lipschitz_estimate,
)
from ._problem import (
    AbstractProblem as AbstractProblem,
    Composite as Composite,
    LeastSquares as LeastSquares,
    LinearLeastSquares as LinearLeastSquares,
)
from ._progress import (
    AbstractProgress as AbstractProgress,
    CallbackProgress as CallbackProgress,
    PrintProgress as PrintProgress,
)
from ._state_evolution import (
    StateEvolution as StateEvolution,
    amp_state_evolution as amp_state_evolution,
    soft_threshold_mse as soft_threshold_mse,
)

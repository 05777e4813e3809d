r"""The training losses of :mod:`diffphys.learn`, one name per meaning.

Correction networks $\tilde M_\theta = M + s N_\theta$ (:class:`~diffphys.learn.CorrectedStepper`):

* :func:`one_step_loss` (supervised, no gradient through the solver):
  $$L_1(\theta) = \frac{1}{B}\sum_b \frac{1}{|\Omega|}\big\|M(u^t_{n_b}) + s N_\theta(\cdot) - u^t_{n_b+1}\big\|^2;$$
* :func:`rollout_loss` (solver-in-the-loop: through an $m$-step rollout of the corrected model),
  $$L_m(\theta) = \frac{1}{B m}\sum_b\sum_{k=1}^{m} \frac{1}{|\Omega|}\big\|\tilde M_\theta^{\,k}(u^t_{n_b}) - u^t_{n_b+k}\big\|^2;$$
* :func:`observation_loss` (no truth: the strong-constraint 4D-Var cost of many windows, each a
  :class:`~diffphys.assimilate.StrongConstraint4DVar` with the corrected model),
  $$J(\theta, v) = \frac{1}{W}\sum_{w}\frac{1}{N}\,\mathcal J_w(\theta, v_w),\qquad
    \mathcal J_w = \tfrac12\|v_w\|^2 + \tfrac12\big\|m_w\odot R^{-1/2}\big(y_w - \mathcal H(\tilde M_\theta(x^b_w + B^{1/2}v_w))\big)\big\|^2.$$

Learned (unrolled) solvers $v_K = S_\phi(p)$ (:class:`~diffphys.learn.UnrolledSolver`) on problems
$p = 1..P$, by :func:`unrolled_solver_loss`:

* ``"supervised"``: $\frac1P\sum_p \|z_p(v_K) - z_p^{\text{true}}\|^2 / \|z_p(0) - z_p^{\text{true}}\|^2$,
  the error of the control $z_p$ (``problem.control``) relative to the starting point's;
* ``"cost"``: $\frac1P\sum_p \Phi_p(v_K)/\Phi_p(0)$ (unsupervised: the problem's objective, the
  value of its prior included for a :class:`~diffphys.solvers.Composite`);
* ``"optimality"``: $\frac1P\sum_p \|F_p(v_K)\|^2/\|F_p(0)\|^2$ with $F$ the solver's optimality
  residual (unsupervised, the KKT loss; for Gauss–Newton $F = \nabla\Phi$).

References: K. Um, R. Brand, Y. Fei, P. Holl, N. Thuerey, "Solver-in-the-loop", NeurIPS 2020;
J. Brajard, A. Carrassi, M. Bocquet, L. Bertino, Phil. Trans. R. Soc. A 379 (2021) 20200086
(learning from observations through data assimilation); K. Gregor, Y. LeCun, "Learning fast
approximations of sparse coding", ICML 2010; V. Monga, Y. Li, Y. C. Eldar, "Algorithm unrolling",
IEEE Signal Process. Mag. 38 (2021) 18-44.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._misc import tree_squared_norm
from .._rollout import rollout
from ..adjoint import AbstractAdjoint, Direct
from ..assimilate import StrongConstraint4DVar
from ..observe import DiagonalR
from ..solvers import AbstractIterativeSolver
from ._corrected import CorrectedStepper
from ._windows import ObservationWindows

__all__ = ["SOLVER_LOSSES", "observation_loss", "one_step_loss", "rollout_loss", "unrolled_solver_loss"]

SOLVER_LOSSES = ("supervised", "cost", "optimality")


def one_step_loss(corrected: CorrectedStepper, states, targets) -> jax.Array:
    r"""$L_1$: mean squared error of one corrected step, the solver's prediction held fixed.

    **Arguments:** ``corrected``; ``states``, ``targets``: batches ``(B, *grid)`` of truth states
    $u^t_n$ and $u^t_{n+1}$. **Returns:** a scalar.
    """
    prediction = jax.lax.stop_gradient(jax.vmap(corrected._model_step)(states))
    stepped = prediction + jax.vmap(corrected.correction)(states, prediction)
    return jnp.mean((stepped - targets) ** 2)


def rollout_loss(corrected, windows, *, adjoint: AbstractAdjoint = Direct()) -> jax.Array:
    r"""$L_m$: mean squared error of an $m$-step corrected rollout against the truth, through the solver.

    **Arguments:** ``corrected`` (any stepper); ``windows``: truth windows ``(B, m + 1, *grid)``
    (entry 0 starts the rollout); ``adjoint``: the rollout's derivative strategy. **Returns:** a scalar.
    """
    m = windows.shape[1] - 1
    run = lambda u0: rollout(corrected, u0, m, save_every=1, adjoint=adjoint, check_finite=False)[1:]
    return jnp.mean((jax.vmap(run)(windows[:, 0]) - windows[:, 1:]) ** 2)


def observation_loss(corrected, windows: ObservationWindows, v=None, idx=None, *, adjoint: AbstractAdjoint = Direct()) -> jax.Array:
    r"""$J(\theta, v)$ of the module docstring over the windows ``idx`` (default: all).

    Each window is a :class:`~diffphys.assimilate.StrongConstraint4DVar` with ``corrected`` as its
    model; $\mathcal J_w$ is its ``cost`` at $v_w$, or, with ``v=None`` or ``windows.B=None`` (initial
    states held at the backgrounds), $\tfrac12\|$its observation residuals at $v=0\|^2$.

    **Arguments:** ``corrected`` (any stepper), ``windows``, ``v`` (``(W, *grid)`` increments or
    ``None`` for the backgrounds), ``idx`` (window indices), ``adjoint`` (the rollout's derivative strategy).
    **Returns:** a scalar.
    """
    idx = jnp.arange(windows.n_windows) if idx is None else idx
    # Without B the initial states are the backgrounds: any covariance gives z_b + C^{1/2} 0 = z_b.
    B = DiagonalR(1.0) if windows.B is None else windows.B
    increments = None if v is None or windows.B is None else v[idx]

    def window_cost(observations, mask, background, increment):
        problem = StrongConstraint4DVar(corrected, windows.schedule, jnp.where(mask, observations, jnp.nan), windows.R,
                                        B, background, adjoint=adjoint)
        if increment is None:
            return 0.5 * tree_squared_norm(problem.observation_residuals(problem.zero_control()))
        return problem.cost(increment)

    costs = eqx.filter_vmap(window_cost)(windows.observations[idx], windows.mask[idx], windows.background[idx],
                                         increments)
    return jnp.mean(costs) / windows.schedule.size


def _objective(problem, x):
    r"""$\Phi(x)$: the smooth cost plus the prior's value (a :class:`~diffphys.solvers.Composite`'s whole objective)."""
    prior = problem.prior()
    return problem.cost(x) + (0.0 if prior is None else prior.value(x))


def unrolled_solver_loss(unrolled: eqx.Module, problems, truths=None, *, loss: str = "supervised") -> jax.Array:
    r"""The training loss of a learned solver on a stacked batch of problems (see the module docstring).

    **Arguments:** ``unrolled``: an :class:`~diffphys.learn.UnrolledSolver`; ``problems``: problems
    stacked along a leading axis (:func:`~diffphys.learn.stack_problems`); ``truths``: the true
    controls, stacked likewise (``loss="supervised"`` only; compared with ``problem.control(v)``,
    or with ``v`` for a problem without ``control``); ``loss``: ``"supervised"``, ``"cost"`` or
    ``"optimality"`` (its residual at the solver's fixed default parameters, so training cannot
    shrink the measure itself). **Returns:** a scalar.
    """
    if loss not in SOLVER_LOSSES:
        raise ValueError(f"unrolled_solver_loss: unknown loss {loss!r}; valid are {list(SOLVER_LOSSES)}")
    if loss == "supervised" and truths is None:
        raise ValueError("unrolled_solver_loss: loss='supervised' needs the true control fields (truths)")
    solver = unrolled.solver
    if loss == "optimality" and type(solver).point_value is not AbstractIterativeSolver.point_value:
        raise ValueError(
            f"unrolled_solver_loss: loss='optimality' needs an optimality condition on the iterate alone; "
            f"{type(solver).__name__}'s involves its dual variables, which the unrolled solver does not return: "
            "use loss='cost' or 'supervised'"
        )

    def one(problem, truth):
        zero = problem.zero_control()
        v = unrolled(problem)
        if loss == "supervised":
            control = getattr(problem, "control", lambda x: x)
            error = lambda z: tree_squared_norm(jax.tree_util.tree_map(jnp.subtract, control(z), truth))
            return error(v) / error(zero)
        if loss == "cost":
            return _objective(problem, v) / _objective(problem, zero)
        solver, params = unrolled.solver, unrolled.solver.default_params(zero)
        residual = lambda z: tree_squared_norm(solver.optimality_residual(problem, z, params))
        return residual(v) / residual(zero)

    return jnp.mean(eqx.filter_vmap(one)(problems, truths))

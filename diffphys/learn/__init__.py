"""Learned model-error corrections and learned (unrolled) solvers: corrected steppers, correction networks,
model-error scenarios, one training loop (solver-in-the-loop, from observations, unrolled solvers), their
losses, checkpoints."""

from ._corrected import FEEDS as FEEDS, CorrectedStepper as CorrectedStepper
from ._networks import MLP as MLP, ConvNet as ConvNet, load_network as load_network, save_network as save_network
from ._checkpoint import (
    CHECKPOINT_NAME as CHECKPOINT_NAME,
    checkpoint_info as checkpoint_info,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
)
from ._scenarios import (
    EXTRA_TERMS as EXTRA_TERMS,
    CorrectionDataset as CorrectionDataset,
    TruthWithExtraTerm as TruthWithExtraTerm,
    downsample as downsample,
    missing_physics_scenario as missing_physics_scenario,
    random_periodic_fields as random_periodic_fields,
    resolution_scenario as resolution_scenario,
)
from ._fit import NonFiniteLossError as NonFiniteLossError, TrainingHistory as TrainingHistory, fit as fit
from ._losses import (
    SOLVER_LOSSES as SOLVER_LOSSES,
    observation_loss as observation_loss,
    one_step_loss as one_step_loss,
    rollout_loss as rollout_loss,
    unrolled_solver_loss as unrolled_solver_loss,
)
from ._train import METHODS as METHODS, train_correction as train_correction, trainable_partition as trainable_partition
from ._windows import ObservationWindows as ObservationWindows
from ._observations import train_from_observations as train_from_observations
from ._unrolled import (
    UnrolledSolver as UnrolledSolver,
    stack_problems as stack_problems,
    train_unrolled_solver as train_unrolled_solver,
)

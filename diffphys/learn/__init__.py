"""Learned model-error corrections: corrected steppers, correction networks, model-error scenarios,
solver-in-the-loop training, checkpoints and training from sparse observations."""

from ._corrected import FEEDS as FEEDS, CorrectedStepper as CorrectedStepper
from ._networks import MLP as MLP, ConvNet as ConvNet
from ._checkpoint import CHECKPOINT_NAME as CHECKPOINT_NAME, load_checkpoint as load_checkpoint, save_checkpoint as save_checkpoint
from ._scenarios import (
    EXTRA_TERMS as EXTRA_TERMS,
    CorrectionDataset as CorrectionDataset,
    TruthWithExtraTerm as TruthWithExtraTerm,
    downsample as downsample,
    missing_physics_scenario as missing_physics_scenario,
    random_periodic_fields as random_periodic_fields,
    resolution_scenario as resolution_scenario,
)
from ._train import (
    METHODS as METHODS,
    NonFiniteLossError as NonFiniteLossError,
    TrainingHistory as TrainingHistory,
    one_step_loss as one_step_loss,
    train_correction as train_correction,
    trainable_partition as trainable_partition,
    unrolled_loss as unrolled_loss,
)
from ._observations import (
    ObservationWindows as ObservationWindows,
    observation_loss as observation_loss,
    train_from_observations as train_from_observations,
)

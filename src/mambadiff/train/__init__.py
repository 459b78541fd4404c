"""The shared training loop, optimizer groups, EMA, checkpoint I/O and distributed setup."""
from .batches import StepContext, seed_everything
from .loop import Trainer, TrainingDivergedError, TrainResult
from .train_config import TrainConfig

__all__ = ["StepContext", "TrainConfig", "Trainer", "TrainingDivergedError", "TrainResult", "seed_everything"]

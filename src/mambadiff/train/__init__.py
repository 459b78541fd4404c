"""The shared training loop, optimizer groups, EMA, checkpoint I/O and distributed setup."""
from .batches import StepContext, seed_everything
from .loop import Trainer, TrainResult
from .train_config import TrainConfig

__all__ = ["StepContext", "TrainConfig", "Trainer", "TrainResult", "seed_everything"]

"""Checking a model config by building it where building costs nothing: on torch's meta device."""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["check_model_config"]


def check_model_config(build: Callable[[], object]) -> None:
    """Build the model on the meta device (no memory, no weights) so that a model setting no backbone
    accepts (e.g. a Mamba-2 width its head size does not divide) is a ValueError naming it before a run
    writes anything. ``build()`` builds the model."""
    try:
        with torch.device("meta"):
            build()
    except ValueError as e:
        text = str(e)
        raise ValueError(f"model.{text}" if text.startswith("backbone.") else f"model: {text}") from None
    except RuntimeError:  # an operation the meta device lacks (S4's kernel set-up): the real build checks it
        pass

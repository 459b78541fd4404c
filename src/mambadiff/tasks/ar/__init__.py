"""The autoregressive paraphraser, the baseline of the diffusion models: a causal language model over
``[CLS] source [SEP] target [SEP]`` trained on the target side only (a prefix LM), decoded greedily or
with a beam. Split by job: ``config``, ``train`` (`ARTask`, `train_ar`), ``decode`` (records as
`mambadiff generate` writes them) and ``model`` (loading)."""
from .config import ARConfig, ARDecodeConfig
from .decode import decode_targets, paraphrase_dataset, prompt_ids
from .model import load_ar_model
from .train import ARTask, ar_parameter_report, build_ar_model, target_loss, train_ar

__all__ = ["ARConfig", "ARDecodeConfig", "ARTask", "ar_parameter_report", "build_ar_model", "decode_targets", "load_ar_model",
           "paraphrase_dataset", "prompt_ids", "target_loss", "train_ar"]

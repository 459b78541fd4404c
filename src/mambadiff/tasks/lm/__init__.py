"""Causal language modelling as a task of the shared training loop, split by job: ``config`` (the
run's configs), ``data`` (documents, tokenizer, token streams), ``train`` (`LMTask`, `train_lm`),
``evaluate`` (nats per token, bits per byte) and ``model`` (loading a trained model)."""
from .config import LMConfig, LMDataConfig, LMGenerateConfig
from .data import LMStreams, encode_documents, load_streams, prepare_lm_tokenizer
from .evaluate import score_stream
from .model import load_lm
from .train import LMTask, build_lm, train_lm

__all__ = ["LMConfig", "LMDataConfig", "LMGenerateConfig", "LMStreams", "LMTask", "build_lm", "encode_documents",
           "load_lm", "load_streams", "prepare_lm_tokenizer", "score_stream", "train_lm"]

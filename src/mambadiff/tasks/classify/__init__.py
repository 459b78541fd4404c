"""Sequence classification (sentiment, Long Range Arena) as a task of the shared training loop, split by
job: ``config`` (the run's configs and their validation), ``data`` (files, splits, tokenizer, encoding),
``param_match`` (parameter counts and matching across backbones), ``model`` (building and loading a
classifier), ``evaluate`` (predictions and metrics), ``train`` (the training task, `train_classifier`)
and ``streaming`` (recurrent inference, token by token).
"""
from mambadiff.data.text_clean import CleanConfig

from .config import BACKBONE_NAMES, ClassifyConfig, ClassifyDataConfig, ParamMatchConfig
from .data import (ClassifySplits, encode_examples, load_eval_data, load_run_tokenizer, load_splits, prepare_tokenizer,
                   seeded_subset)
from .evaluate import evaluate_classifier, predict
from .model import build_classifier, describe_parameters, load_classifier, resolve_model_config
from .param_match import match_backbone, non_embedding_parameters, parameter_counts
from .streaming import StreamingClassifier, classify_streaming
from .train import ClassificationTask, train_classifier

__all__ = ["BACKBONE_NAMES", "ClassificationTask", "ClassifyConfig", "ClassifyDataConfig", "ClassifySplits",
           "CleanConfig", "ParamMatchConfig", "StreamingClassifier", "build_classifier", "classify_streaming",
           "describe_parameters", "encode_examples", "evaluate_classifier", "load_classifier", "load_eval_data",
           "load_run_tokenizer", "load_splits", "match_backbone", "non_embedding_parameters", "parameter_counts",
           "predict", "prepare_tokenizer", "resolve_model_config", "seeded_subset", "train_classifier"]

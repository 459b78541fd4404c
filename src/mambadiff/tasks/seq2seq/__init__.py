"""Diffusion seq2seq (MambaDiff / DiffuSeq), split by job: ``config`` (the run's configs), ``train``
(data, denoiser, the training task of each process, `train_seq2seq`), ``model`` (loading a trained
model), ``sampling`` (generation settings and the sampler they build), ``diagnostics``. Generation
over many rows is `mambadiff.tasks.paraphrase`.
"""
from .config import PROCESSES, DiffusionConfig, SampleConfig, Seq2SeqConfig, Seq2SeqDataConfig
from .diagnostics import x0_token_accuracy
from .model import load_seq2seq_model
from .sampling import GenerationSettings, build_sampler, generation_settings, sampling_view
from .train import (DiffusionSeq2SeqTask, MaskedSeq2SeqTask, Seq2SeqTask, build_denoiser, build_seq2seq_trainer,
                    config_parameter_report, fixed_eval_losses, make_seq2seq_task, prepare_data_folder,
                    prepare_tokenizer, self_condition_step, train_seq2seq)

__all__ = ["PROCESSES", "DiffusionConfig", "DiffusionSeq2SeqTask", "GenerationSettings", "MaskedSeq2SeqTask",
           "SampleConfig", "Seq2SeqConfig", "Seq2SeqDataConfig", "Seq2SeqTask", "build_denoiser", "build_sampler",
           "build_seq2seq_trainer", "config_parameter_report", "fixed_eval_losses", "generation_settings",
           "load_seq2seq_model", "make_seq2seq_task", "prepare_data_folder", "prepare_tokenizer", "sampling_view",
           "self_condition_step", "train_seq2seq", "x0_token_accuracy"]

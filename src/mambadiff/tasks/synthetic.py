"""Selective copying, induction heads and MQAR as tasks of the shared training loop.

Glossary: b batch, l length, d model width, k answer positions per example, v vocabulary size.

Model: token embedding -> causal backbone (``bidirectional=False``) -> linear head over the vocab.
Loss: cross-entropy on the answer positions only (the last k positions, or MQAR's query positions;
see ``mambadiff.data.synthetic``). Evaluation: per-token accuracy on the answer positions (``accuracy``)
and the fraction of examples with every answer right (``seq_accuracy``) on a fixed held-out set,
generated with a seed disjoint from the training set's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mambadiff.data.synthetic import TASKS, SyntheticData, make_synthetic
from mambadiff.models.backbones import BackboneConfig, build_backbone, count_parameters

# the held-out set is generated with seed + EVAL_SEED_OFFSET, far from any training seed in use
EVAL_SEED_OFFSET = 1_000_003


@dataclass
class SyntheticTaskConfig:
    task: str = "selective_copy"     # selective_copy | induction | mqar
    seq_len: int = 64                # total length l (selective copying: body + num_tokens queries)
    num_tokens: int = 8              # selective copying: data tokens to copy (k)
    num_symbols: int = 16            # distinct data symbols (the answers' alphabet), as in the paper;
    #                                  MQAR: the size of the key alphabet and of the value alphabet
    num_kv_pairs: int = 8            # MQAR: key-value pairs N
    num_queries: int = 0             # MQAR: queried keys k (0: all N)
    num_train: int = 20_000          # training examples, generated once
    num_eval: int = 1_000            # held-out examples
    eval_batch_size: int = 250
    seed: int = 0

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("num_train", "num_eval", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


class SyntheticModel(nn.Module):
    """Embedding -> causal backbone -> linear head. forward(input_ids (b, l)) -> logits (b, l, v)."""

    def __init__(self, vocab_size: int, backbone: BackboneConfig):
        super().__init__()
        if vocab_size <= 1:
            raise ValueError(f"vocab_size must be > 1, got {vocab_size}")
        if backbone.bidirectional:
            raise ValueError("the synthetic tasks need a causal backbone: set backbone.bidirectional=False")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, backbone.d_model)
        self.backbone = build_backbone(backbone)
        self.head = nn.Linear(backbone.d_model, vocab_size)

    def forward(self, input_ids: torch.Tensor, last: int | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (b, l, v), or only those of the last ``last`` positions (b, last, v), or those at
        ``positions`` (b, k) int64 (b, k, v)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (b, l), got {tuple(input_ids.shape)}")
        if last is not None and positions is not None:
            raise ValueError("pass at most one of last and positions")
        h = self.backbone(self.embedding(input_ids))  # (b, l, d)
        if last is not None:
            h = h[:, -last:]  # (b, k, d)
        elif positions is not None:
            if positions.shape[0] != h.shape[0] or positions.ndim != 2:
                raise ValueError(f"positions must have shape (b={h.shape[0]}, k), got {tuple(positions.shape)}")
            h = h.gather(1, positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (b, k, d)
        return self.head(h)  # (b, l or k, v)

    def num_parameters(self) -> int:
        return count_parameters(self)


class SyntheticTask:
    """A ``Task`` of ``mambadiff.train.Trainer`` for the synthetic selectivity benchmarks."""

    def __init__(self, cfg: SyntheticTaskConfig):
        cfg.validate()
        self.cfg = cfg
        mqar_args = dict(num_kv_pairs=cfg.num_kv_pairs, num_queries=cfg.num_queries or None)
        self.train: SyntheticData = make_synthetic(cfg.task, cfg.num_train, cfg.seq_len, cfg.seed,
                                                   cfg.num_tokens, cfg.num_symbols, **mqar_args)
        self.eval_data: SyntheticData = make_synthetic(cfg.task, cfg.num_eval, cfg.seq_len,
                                                       cfg.seed + EVAL_SEED_OFFSET, cfg.num_tokens,
                                                       cfg.num_symbols, **mqar_args)
        self.num_answers = self.train.num_answers  # k
        self.vocab_size = self.train.vocab_size  # v
        self.num_answer_symbols = self.train.num_symbols  # chance accuracy is 1 / this
        self.answers_at_end = self.train.answers_at_end  # False: gather the logits at answer positions

    def build_model(self, backbone: BackboneConfig) -> SyntheticModel:
        return SyntheticModel(self.vocab_size, backbone)

    # ---- Task protocol -----------------------------------------------------------------------
    def num_train_examples(self) -> int:
        return len(self.train)

    def get_batch(self, indices: list[int], device) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)  # (b,)
        batch = {"inputs": self.train.inputs[idx].to(device),  # (b, l)
                 "answers": self.train.answers[idx].to(device)}  # (b, k)
        if not self.answers_at_end:
            batch["positions"] = self.train.positions[idx].to(device)  # (b, k)
        return batch

    def _answer_logits(self, model: nn.Module, inputs: torch.Tensor,
                       positions: torch.Tensor | None) -> torch.Tensor:
        if self.answers_at_end:
            return model(inputs, last=self.num_answers)  # (b, k, v)
        return model(inputs, positions=positions)  # (b, k, v)

    def loss(self, model: nn.Module, batch: dict, ctx) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self._answer_logits(model, batch["inputs"], batch.get("positions"))  # (b, k, v)
        answers = batch["answers"]  # (b, k)
        loss = F.cross_entropy(logits.float().flatten(0, 1), answers.flatten())
        acc = (logits.argmax(-1) == answers).float().mean()
        return loss, {"loss": loss.item(), "accuracy": acc.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        correct = seq_correct = 0
        loss_sum = 0.0
        data = self.eval_data
        for start in range(0, len(data), self.cfg.eval_batch_size):
            inputs = data.inputs[start:start + self.cfg.eval_batch_size].to(device)  # (b, l)
            answers = data.answers[start:start + self.cfg.eval_batch_size].to(device)  # (b, k)
            positions = None if self.answers_at_end else \
                data.positions[start:start + self.cfg.eval_batch_size].to(device)  # (b, k)
            logits = self._answer_logits(model, inputs, positions).float()  # (b, k, v)
            loss_sum += float(F.cross_entropy(logits.flatten(0, 1), answers.flatten(), reduction="sum"))
            hit = logits.argmax(-1) == answers  # (b, k)
            correct += int(hit.sum())
            seq_correct += int(hit.all(dim=1).sum())
        n_tokens = len(data) * self.num_answers
        return {"accuracy": correct / n_tokens, "seq_accuracy": seq_correct / len(data),
                "loss": loss_sum / n_tokens}

    def count_tokens(self, batch: dict) -> int:
        return int(batch["inputs"].numel())

    def state_dict(self) -> dict:
        # the data is a pure function of the config; keep it to catch a resume with other settings
        return {"config": asdict(self.cfg)}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("config")
        if saved is not None and saved != asdict(self.cfg):
            raise ValueError(f"checkpoint was trained on synthetic task config {saved}, not {asdict(self.cfg)}")

"""Paraphrasing with a trained diffusion seq2seq model: the `Paraphraser` API, and the batch-by-batch
generation behind `mambadiff generate`.

Glossary: b batch, l length, s samples per example.

    from mambadiff import Paraphraser
    p = Paraphraser.from_pretrained("runs/qqp")          # a run folder or one checkpoint folder
    p(["how do i learn python?"], steps=20, samples=4, mbr=True)   # -> ["...", ...]

Randomness rule (reproducible and resumable). The examples are cut, in input order, into batches of
``batch_size`` rows; sample ``s`` of batch ``k`` draws all its noise from one generator seeded with
``numpy.random.SeedSequence((seed, k, s))``. The outputs of a row therefore depend on the seed, the
sampling settings, ``batch_size``, the rows of its own batch and the device (CPU and CUDA generators
differ), and on nothing else: not on how many rows came before a run's first row, nor on where a run
stopped. A run resumed after a crash writes exactly the rows an uninterrupted run writes. Changing
``batch_size`` changes the draws.

Every batch is complete (all S samples drawn, the MBR pick made) before its rows are handed out, so a
caller can write them and forget them: memory stays constant for any number of examples.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from mambadiff.data.errors import DataError
from mambadiff.data.seq2seq import build_example, encode_for_layout
from mambadiff.diffusion.mbr import mbr_select
from mambadiff.progress import progress_bar
from mambadiff.ssm.checks import check_positive_int
from mambadiff.tasks.seq2seq.model import load_seq2seq_model
from mambadiff.tasks.seq2seq.sampling import GenerationSettings, build_sampler, generation_settings, sampling_view

if TYPE_CHECKING:
    from mambadiff.data.seq2seq import Seq2SeqDataset
    from mambadiff.data.tokenizer import TextTokenizer
    from mambadiff.models.denoiser import Denoiser
    from mambadiff.tasks.seq2seq.config import Seq2SeqConfig

__all__ = ["GenerationSettings", "Paraphraser", "SourceRow", "batch_generator", "batches", "generate",
           "sampling_workers"]


class SourceRow(NamedTuple):
    """One input example: the source text, the reference (None when unknown) and where it came from."""

    source: str
    reference: str | None = None
    file: str | None = None
    line: int | None = None


def batch_generator(seed: int, batch_index: int, sample: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of sample ``sample`` of batch ``batch_index`` (the module's randomness rule)."""
    state = np.random.SeedSequence((seed, batch_index, sample)).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def _decode_target(tok: TextTokenizer, ids: torch.Tensor, input_mask: torch.Tensor) -> str:
    """Text of the target span: the generated positions up to the first [SEP], specials removed."""
    span = ids[input_mask.bool()].tolist()
    if span and span[0] == tok.cls_id:
        span = span[1:]
    if tok.sep_id in span:
        span = span[:span.index(tok.sep_id)]
    return tok.decode(span, skip_special=True)


def _decode_source(tok: TextTokenizer, ids: torch.Tensor, input_mask: torch.Tensor) -> str:
    span = ids[~input_mask.bool()].tolist()
    return tok.decode([i for i in span if i not in (tok.cls_id, tok.sep_id, tok.pad_id)], skip_special=True)


class LaidOutBatch(NamedTuple):
    input_ids: torch.Tensor  # (b, l)
    input_mask: torch.Tensor  # (b, l) 1 = generated (target side)
    references: list[str | None]  # per row: the reference as given (not laid out, not decoded), or None
    sources: list[str]  # per row: the source as given


class Paraphraser:
    """A trained diffusion seq2seq model ready to sample: ``p(texts, steps=..., samples=..., mbr=...)``."""

    def __init__(self, model: Denoiser, tokenizer: TextTokenizer, cfg: Seq2SeqConfig):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self._samplers: dict[tuple, Any] = {}  # sampler settings -> sampler object (see `sampler`)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu", ema: bool = True) -> Paraphraser:
        """Load a run folder (its latest checkpoint) or a checkpoint folder; ``ema=False`` takes the raw weights."""
        model, tok, cfg = load_seq2seq_model(path, ema=ema, device=str(device))
        return cls(model, tok, cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_steps(self) -> int:
        """T, the diffusion steps the model was trained with."""
        return self.cfg.diffusion.steps

    @property
    def process(self) -> str:
        """``diffusion.process`` of the model: which sampler section (``sample.gaussian`` / ``sample.masked``) applies."""
        return self.cfg.diffusion.process

    # ---- settings ------------------------------------------------------------------------------
    def settings(self, **options: Any) -> GenerationSettings:
        """The checkpoint's ``sample`` config with ``options`` replacing it (None values ignored), checked:
        the keys of ``sample`` (samples, mbr, batch_size, seed) and of the sampler section of the model's
        process; a key of the other process's sampler is a ValueError naming it."""
        settings = generation_settings(self.cfg.sample, self.process, options)
        self.sampler(settings)  # checks what needs the model (Gaussian steps <= T)
        return settings

    def sampler(self, settings: GenerationSettings):
        """The sampler object of ``settings`` (`mambadiff.diffusion.samplers`), built once per settings:
        every batch and sample of a run reuses it (a sampler holds no per-batch state)."""
        key = (settings.process, tuple(settings.sampler.option_values().items()))
        if key not in self._samplers:
            self._samplers[key] = build_sampler(self.cfg, self.tokenizer, settings.sampler)
        return self._samplers[key]

    # ---- one batch -----------------------------------------------------------------------------
    def layout(self, rows: Sequence[SourceRow]) -> LaidOutBatch:
        """Tokenize and lay out rows as the model trained (a row without reference gets an empty target,
        so the source has the whole length budget). The batch keeps each row's source and reference
        text as given: the output rows hold those, not a decoding of their (truncated) tokens, which
        would drop the words the vocabulary lacks."""
        tok, d = self.tokenizer, self.cfg.data
        sources, src_cut = encode_for_layout(tok, [r.source for r in rows], d.seq_len)
        targets, trg_cut = encode_for_layout(tok, [r.reference if r.reference is not None else "" for r in rows],
                                             d.seq_len)
        ids, masks = [], []
        for i, (row, src_ids, trg_ids) in enumerate(zip(rows, sources, targets)):
            for field, text, tokens in (("src", row.source, src_ids), ("trg", row.reference, trg_ids)):
                if text is not None and not tokens:
                    raise DataError("text has no tokens after tokenization", file=row.file, line=row.line, field=field)
            cut = tuple(f for f, c in (("src", src_cut[i]), ("trg", trg_cut[i])) if c)
            ex = build_example(src_ids, trg_ids, tok, d.seq_len, d.layout, d.on_overflow,
                               where={"file": row.file, "line": row.line, "cut": cut})
            ids.append(ex.input_ids)
            masks.append(ex.input_mask)
        input_ids = torch.tensor(ids, dtype=torch.long)  # (b, l)
        input_mask = torch.tensor(masks, dtype=torch.long)  # (b, l)
        return LaidOutBatch(input_ids, input_mask, [r.reference for r in rows], [r.source for r in rows])

    def sample_targets(self, input_ids: torch.Tensor, input_mask: torch.Tensor, settings: GenerationSettings,
                       generator: torch.Generator) -> torch.Tensor:
        """One draw of the target tokens (b, l) for a laid-out batch: the one call into the sampler
        of the model's ``diffusion.process``."""
        view = sampling_view(self.cfg, self.model)
        return self.sampler(settings).sample(view, input_ids, input_mask, generator).token_ids  # (b, l)

    @torch.no_grad()
    def sample_batch(self, input_ids: torch.Tensor, input_mask: torch.Tensor, settings: GenerationSettings,
                     batch_index: int) -> tuple[list[str], list[str], list[list[str]]]:
        """(sources, outputs, samples) of batch ``batch_index``: the decoded sources, the output of each row
        (the MBR pick of its S samples, or its first sample) and all S samples per row."""
        tok, device = self.tokenizer, self.device
        ids, imask = input_ids.to(device), input_mask.to(device)  # (b, l) each
        samples: list[list[str]] = [[] for _ in range(ids.shape[0])]
        for s in range(settings.samples):
            token_ids = self.sample_targets(ids, imask, settings, batch_generator(settings.seed, batch_index, s, device))
            token_ids = token_ids.cpu()  # (b, l)
            for j in range(ids.shape[0]):
                samples[j].append(_decode_target(tok, token_ids[j], input_mask[j]))
        picks = mbr_select(samples) if settings.samples > 1 and settings.mbr else [0] * len(samples)
        sources = [_decode_source(tok, input_ids[j], input_mask[j]) for j in range(ids.shape[0])]
        return sources, [c[k] for c, k in zip(samples, picks)], samples

    # ---- many rows -----------------------------------------------------------------------------
    def generate_rows(self, rows: Iterable[SourceRow], settings: GenerationSettings, *, skip: int = 0,
                      progress: bool = False, total: int | None = None,
                      on_skipped=None, workers: int = 1) -> Iterator[list[dict[str, Any]]]:
        """Sample ``rows`` batch by batch; yields each batch's records (``source``, ``reference`` when the
        row has one, ``recover``, ``samples``) once all its samples are drawn, in input order.

        The first ``skip`` rows are laid out but not sampled (resuming): batches wholly inside them
        are passed to ``on_skipped(first_row, sources)`` so a caller can check them against rows it
        already holds; the batch that straddles ``skip`` is sampled whole and only its rows from
        ``skip`` on are yielded (the randomness rule makes them what the first run drew).

        ``workers > 1`` samples that many batches at once, each in its own thread with an equal share
        of torch's CPU threads (at least one). A batch is a chain of small operations that one
        intra-op pool spreads poorly over cores; whole batches side by side keep every core busy.
        The randomness rule is per batch, so the draws do not depend on ``workers``.
        """
        check_positive_int("workers", workers)
        bar = progress_bar(total, f"sample ({self.sampler(settings).num_steps} steps, {settings.samples} "
                                  f"sample{'s' * (settings.samples > 1)})", initial=min(skip, total or skip),
                           enabled=progress)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="sample") if workers > 1 else None
        torch_threads = torch.get_num_threads()
        if pool is not None:
            torch.set_num_threads(max(1, torch_threads // workers))
        pending: deque = deque()  # (laid batch, first row, future or result) in input order

        def oldest_records() -> list[dict[str, Any]]:
            laid, first, result = pending.popleft()
            _, outputs, samples = result.result() if pool is not None else result
            return self._records(laid, first, skip, outputs, samples)

        try:
            for k, (first, batch) in enumerate(batches(rows, settings.batch_size)):
                laid = self.layout(batch)
                if first + len(batch) <= skip:
                    if on_skipped is not None:
                        on_skipped(first, laid.sources)
                    continue
                if pool is None:
                    pending.append((laid, first, self.sample_batch(laid.input_ids, laid.input_mask, settings, k)))
                else:
                    pending.append((laid, first, pool.submit(self.sample_batch, laid.input_ids, laid.input_mask,
                                                             settings, k)))
                while len(pending) >= workers:
                    records = oldest_records()
                    yield records
                    bar.update(len(records))
            while pending:
                records = oldest_records()
                yield records
                bar.update(len(records))
        finally:
            if pool is not None:
                for _, _, future in pending:
                    future.cancel()
                pool.shutdown(wait=True)
                torch.set_num_threads(torch_threads)
            bar.close()

    @staticmethod
    def _records(laid: LaidOutBatch, first: int, skip: int, outputs: list[str],
                 samples: list[list[str]]) -> list[dict[str, Any]]:
        """The output records of a sampled batch whose first row is ``first``, from row ``skip`` on:
        the source and reference as given, the model's decoded outputs."""
        records = []
        for j in range(max(0, skip - first), len(laid.sources)):
            rec: dict[str, Any] = {"source": laid.sources[j]}
            if laid.references[j] is not None:
                rec["reference"] = laid.references[j]
            rec["recover"] = outputs[j]
            rec["samples"] = samples[j]
            records.append(rec)
        return records

    def __call__(self, texts: str | Sequence[str], *, progress: bool = False, **options: Any) -> list[str]:
        """Paraphrase each text; returns one string per text (the MBR pick of ``samples`` draws when
        ``mbr``). ``options``: `settings` keywords (unset ones come from the checkpoint's config)."""
        if isinstance(texts, str):
            raise ValueError("texts: expected a list of strings, got a single string (wrap it in a list)")
        rows = []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"texts[{i}]: expected a non-empty string, got {t!r:.80}")
            rows.append(SourceRow(t.strip(), None, "texts", i + 1))
        settings = self.settings(**options)
        return [r["recover"] for batch in self.generate_rows(rows, settings, progress=progress, total=len(rows))
                for r in batch]


def sampling_workers(requested: int, device: torch.device | str, rows: int | None, batch_size: int) -> int:
    """The ``workers`` of `Paraphraser.generate_rows` for a request: ``requested`` when > 0; for 0
    (auto), one per torch CPU thread on CPU, never more than the ``rows`` (None: unknown) make
    batches, and 1 on other devices (a GPU runs one batch's kernels back to back)."""
    if requested > 0:
        return requested
    if torch.device(device).type != "cpu":
        return 1
    n_batches = math.ceil(rows / batch_size) if rows is not None else 1
    return max(1, min(torch.get_num_threads(), n_batches))


def batches(rows: Iterable[SourceRow], size: int) -> Iterator[tuple[int, list[SourceRow]]]:
    """(index of the first row, rows) for consecutive batches of ``size`` rows."""
    batch: list[SourceRow] = []
    first = 0
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield first, batch
            first += size
            batch = []
    if batch:
        yield first, batch


def generate(model: Denoiser, tok: TextTokenizer, cfg: Seq2SeqConfig, dataset: Seq2SeqDataset,
             limit: int | None = None, progress: bool = True, **options: Any) -> list[dict[str, Any]]:
    """Sample targets for the first ``limit`` examples (None: ``sample.limit``; 0: all) of a laid-out
    dataset: records with ``source`` and ``reference`` (the dataset's texts as given), ``recover`` (the
    output DiffuSeq's evaluation reads; the MBR pick when S > 1) and ``samples`` (all S outputs), drawn
    by the module's randomness rule (the same rows as `mambadiff generate` writes). ``options``:
    `Paraphraser.settings` keywords."""
    para = Paraphraser(model, tok, cfg)
    settings = para.settings(**options)
    limit = cfg.sample.limit if limit is None else limit
    data = dataset.tensors()
    n = data["input_ids"].shape[0] if not limit else min(limit, data["input_ids"].shape[0])
    bar = progress_bar(n, f"sample ({para.sampler(settings).num_steps} steps)", enabled=progress)
    records = []
    for k, first in enumerate(range(0, n, settings.batch_size)):
        ids = data["input_ids"][first:min(n, first + settings.batch_size)]  # (b, l)
        imask = data["input_mask"][first:min(n, first + settings.batch_size)]  # (b, l)
        _, outputs, samples_ = para.sample_batch(ids, imask, settings, k)
        for j in range(ids.shape[0]):
            source, reference = dataset.pairs[first + j]
            records.append({"source": source, "reference": reference, "recover": outputs[j], "samples": samples_[j]})
        bar.update(ids.shape[0])
    bar.close()
    return records

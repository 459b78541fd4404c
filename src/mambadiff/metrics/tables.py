"""The table and the Markdown summary of an `evaluate_predictions` result (what `mambadiff evaluate` prints
and writes with ``--markdown``)."""
from __future__ import annotations

from pathlib import Path

from mambadiff.metrics.generation import METRIC_LABELS

__all__ = ["results_markdown", "results_table"]


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "n":
        return str(int(value))
    if key in ("sacrebleu", "len_diffuseq", "len_words"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def results_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of an evaluate_predictions result: model [, per file] [, MBR], copy source."""
    named: list[tuple[str, dict]] = []
    n_files = len(result["per_file"])
    model = dict(result["model"])
    if result.get("diversity"):
        model.update({k: result["diversity"][k] for k in ("self_bleu", "div4")})
    named.append(("model" if n_files == 1 else f"model (mean of {n_files} files)", model))
    if n_files > 1:
        named += [(f"file {Path(f['file']).name}", f) for f in result["per_file"]]
    if result.get("mbr"):
        named.append((f"model, MBR of {result['candidates']['max']}", result["mbr"]))
    named.append(("copy source (baseline)", result["copy_source"]))
    keys = [k for k in METRIC_LABELS if any(k in m for _, m in named)]
    headers = ["", *(METRIC_LABELS[k][0] for k in keys), "n"]
    rows = [[name, *(_fmt(k, m.get(k)) for k in keys), _fmt("n", m.get("n", result["n_examples"]))]
            for name, m in named]
    return headers, rows


def results_markdown(result: dict, title: str = "Generation metrics") -> str:
    from tabulate import tabulate

    headers, rows = results_table(result)
    bs = result.get("bertscore")
    lines = [f"# {title}", ""]
    if result.get("step") is not None:
        lines.append(f"- checkpoint step: {result['step']}")
    lines += [
        f"- files: {', '.join('`' + f + '`' for f in result['files'])}",
        f"- examples: {result['n_examples']}; candidates per example: {result['candidates']['min']}"
        + (f"-{result['candidates']['max']}" if result['candidates']['max'] != result['candidates']['min'] else ""),
        f"- BERTScore: {bs['name']}, layer {bs['num_layers']} (F1, no idf, no rescaling)" if bs else "- BERTScore: off",
        f"- iBLEU alpha: {result['alpha']}",
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
        "",
        "BLEU, ROUGE-L, dist-1, length, self-BLEU, div-4 and MBR follow DiffuSeq's scripts/eval_seq2seq.py "
        "(sentence BLEU-4 with nltk smoothing 4, ROUGE-L F1, means over sentences; 'len (DiffuSeq)' counts "
        "`split(' ')` pieces including spaces left by removed [PAD] tokens). sacreBLEU is corpus-level, 0-100. "
        "'BLEU vs src' is the output's BLEU against its source; iBLEU = alpha*BLEU - (1-alpha)*BLEU vs src; "
        "copy rate = share of outputs equal to the source (lower-cased, whitespace collapsed). "
        "'repeats (outputs)' = share of outputs holding the same word twice in a row; 'repeats (tokens)' = "
        "such repeated words / words, over all outputs.",
        "",
    ]
    return "\n".join(lines)

"""Reports of a run folder: PNG plots (report.plots) and a Markdown summary (report.summary).

Public API: build_report(run_dir, out_dir=None, bench=None, max_samples=5) -> Report(markdown, plots);
loaders load_metrics_log, load_eval_results, load_bench. Importing this package does not import
matplotlib; report.plots does (Agg backend).
"""
from mambadiff.report.summary import (Report, RunFileError, build_report, load_bench, load_eval_results,
                                      load_metrics_log)

__all__ = ["Report", "RunFileError", "build_report", "load_bench", "load_eval_results", "load_metrics_log"]

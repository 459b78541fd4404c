"""Text-classification data: loaders, encoding into a torch Dataset, stratified splits.

- `loaders`: `load_classification` and the per-format loaders (formats, labels, bad rows and
  encodings are described there).
- `readers`: file bytes -> raw rows for CSV / TSV / JSON lines, `detect_format`.
- `rows`: the per-row checks and the bad-row policy, `ClassificationData`.
- `labels`: label normalisation and label maps.
- `dataset`: `ClassificationDataset`, `collate_classification`, `LengthBucketBatchSampler`.
- `splits`: `stratified_split`, `resolve_splits`.
"""
from .dataset import ClassificationDataset, LengthBucketBatchSampler, collate_classification
from .loaders import (
    BINARY_DATASETS,
    FORMATS,
    SENTIMENT140_COLUMNS,
    SENTIMENT140_COLUMNS_2,
    load_binary_dataset,
    load_classification,
    load_csv,
    load_imdb,
    load_jsonl,
    load_sentiment140,
    load_sst2,
)
from .readers import detect_format
from .rows import ClassificationData
from .splits import resolve_splits, stratified_split

__all__ = [
    "ClassificationData",
    "ClassificationDataset",
    "LengthBucketBatchSampler",
    "collate_classification",
    "detect_format",
    "load_classification",
    "load_sentiment140",
    "load_binary_dataset",
    "load_sst2",
    "load_imdb",
    "load_csv",
    "load_jsonl",
    "stratified_split",
    "resolve_splits",
    "SENTIMENT140_COLUMNS",
    "SENTIMENT140_COLUMNS_2",
    "FORMATS",
    "BINARY_DATASETS",
]

"""The files of a run directory (``ram-train train --out RUN``), named in one place for every module that reads them."""

CHECKPOINT = "checkpoint.pt"  # the latest state, rewritten atomically every checkpoint_every steps
BEST = "best.pt"  # the kept weights (the model's or their average) with the lowest validation error so far
LOG = "log.jsonl"  # one JSON record per line: training records (loss terms, "reward") and validation records
CONFIG = "config.json"  # the run's configuration as it now stands (a resume may lengthen it)

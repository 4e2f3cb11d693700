"""The train stage's library: an SAE trainer (`trainer.py`) and its pieces, each in its own module.

`jobs/train.py` feeds it from Ray Data with a bounded shuffle buffer; tests feed it from numpy.
"""

from atlas.train.batches import Batch, holdout_mask, parquet_batches, rebatch, split_rows
from atlas.train.checkpoint import CHECKPOINT, remove_checkpoint
from atlas.train.evaluate import evaluate_sae
from atlas.train.trainer import SAETrainer, TrainResult, initial_sae, train_sae

__all__ = [
    "CHECKPOINT",
    "Batch",
    "SAETrainer",
    "TrainResult",
    "evaluate_sae",
    "holdout_mask",
    "initial_sae",
    "parquet_batches",
    "rebatch",
    "remove_checkpoint",
    "split_rows",
    "train_sae",
]

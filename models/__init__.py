"""metaemb model core: LiMAML in pure PyTorch (no Spark / Airflow / Feast here).

blocks      the meta and global blocks as functions of explicit parameters
data        TaskBatch (padded tasks) and input checks
finetune    Algorithm 2b, batched over tasks (the daily hot path)
train       Algorithm 2a: limaml / maml / vanilla
checkpoint  content-hashed checkpoints
metrics     AUC
"""

from .blocks import ModelSpec, init_params, param_shapes
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import NonFiniteEmbeddingError, TaskBatch
from .finetune import finetune_embed
from .metrics import auc
from .train import train

__all__ = [
    "ModelSpec", "TaskBatch", "Checkpoint", "init_params", "param_shapes", "finetune_embed",
    "train", "save_checkpoint", "load_checkpoint", "NonFiniteEmbeddingError", "CheckpointError", "auc",
]

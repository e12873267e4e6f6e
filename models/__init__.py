"""metaemb model core: LiMAML in pure PyTorch (no Spark / Airflow / Feast here).

blocks       the meta and global blocks as functions of explicit parameters
data         TaskBatch (padded tasks) and input checks
finetune     Algorithm 2b, batched over tasks (the daily hot path); kernel: its fused steps
train        Algorithm 2a: limaml / maml / vanilla
checkpoint   content-hashed checkpoints
onnx_export  the global block as the serving artifact's ONNX graph
metrics      AUC

Import from the module that defines a name (`from models.checkpoint import load_checkpoint`).
"""

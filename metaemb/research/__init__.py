"""Research code the daily job does not run: the paper's evaluation protocol (evaluate) and the
reference fine-tune implementations it is tested and benchmarked against (reference_finetune)."""

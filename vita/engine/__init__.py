"""The training engine: the loop (:mod:`~vita.engine.engine`), checkpoints, exports, metrics, DeepSpeed config."""

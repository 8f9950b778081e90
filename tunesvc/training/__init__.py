"""PyTorch: :class:`TrainingSetup`, :func:`fit`, population training, checkpoints and the
pre-tuning checks. Knows nothing of Optuna."""

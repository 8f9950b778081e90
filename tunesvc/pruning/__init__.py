"""Optuna pruners: :class:`LearningCurvePruner` and the small interface the worker uses to ask a
pruner for a decision with its reason on in-memory curves."""

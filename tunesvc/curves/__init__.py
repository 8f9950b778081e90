"""Pure: learning curves, the diagnoses read from them, and their extrapolation.
No database, no torch, no Optuna storage."""

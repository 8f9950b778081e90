"""The one door to the database: URL resolution, per-dialect engine settings, errors mapped to
one line, tunesvc's trial and study attributes, and the SQL tunesvc runs on Optuna's tables."""

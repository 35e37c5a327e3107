"""The results: the row model, rows on disk as they finish, shards, tables and plots, MLflow."""

"""Search: the optimal architecture and recipe with Optuna.

Owns the search spaces, studies on SQLite or PostgreSQL shared by many workers, trials (each a short
training run scored on the validation split, pruned per epoch) and the search report, written by
the same report engine as every other report. Depends on training and everything below it.
"""

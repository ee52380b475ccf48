"""Training: tasks (batches, losses, evaluation) and the shared loop."""

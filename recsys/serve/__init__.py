"""The scoring API (`recsys-serve`): a saved run's top-k for a user or a history over HTTP."""

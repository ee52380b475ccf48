"""Recommender models: SS4Rec building blocks (Mamba, S5) and baselines."""

"""Evaluation of recommenders."""

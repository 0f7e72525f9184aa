"""Evaluations of dense and pruned models."""

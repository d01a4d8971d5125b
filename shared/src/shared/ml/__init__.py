"""Torch-dependent code shared by the worker and the trainer (never imported by the API)."""

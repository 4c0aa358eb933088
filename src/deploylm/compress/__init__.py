"""Compression stages: knowledge distillation (distill.py) and pruning (prune*.py), their shared loss (kd.py)."""

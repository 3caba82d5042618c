"""Checkpoint formats (plugins, `git_theta.checkpoints`): bytes <-> named tensors + skeleton."""

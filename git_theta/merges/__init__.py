"""Merge strategies for conflicting parameters (plugins, `git_theta.merges`)."""

"""git-theta: version machine-learning checkpoints with plain git, parameter by parameter."""

from __future__ import annotations

__version__ = "0.1.0"

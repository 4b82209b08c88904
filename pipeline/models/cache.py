"""Where converted and built models are cached: ``$GLM_PIPELINE_CACHE`` (default ``~/.cache/glm-pipeline``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of the model cache (created on demand)."""
    root = Path(os.environ.get("GLM_PIPELINE_CACHE", Path.home() / ".cache" / "glm-pipeline"))
    root.mkdir(parents=True, exist_ok=True)
    return root


__all__ = ["cache_dir"]

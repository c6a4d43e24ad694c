"""Running a pipeline beyond one process: `--executor ray` (docs/distributed.md)."""

from .ray_executor import RayExecutor

__all__ = ["RayExecutor"]

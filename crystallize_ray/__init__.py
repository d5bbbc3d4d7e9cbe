"""Crystallize on Ray: ``RayExecution`` fans replicates and optimizer trials out as Ray tasks.

Importing this package does not import Ray; the first run does.
"""

from .plugin import RayExecution

__all__ = ["RayExecution"]

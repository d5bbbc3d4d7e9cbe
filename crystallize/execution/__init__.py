"""Executors map (condition, replicate) tasks to outcomes. Nothing here knows about Ray."""

from .base import Executor
from .local import AsyncExecutor, ProcessExecutor, SerialExecutor, ThreadExecutor

__all__ = ["AsyncExecutor", "Executor", "ProcessExecutor", "SerialExecutor", "ThreadExecutor"]

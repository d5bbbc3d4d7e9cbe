"""Upstream-style ``crystallize.datasources.registry`` path; the real code is in `crystallize.datasource_registry`."""

from crystallize.datasource_registry import (
    clear_registry,
    get_datasource,
    list_datasources,
    register_datasource,
    unregister_datasource,
)

__all__ = ["clear_registry", "get_datasource", "list_datasources", "register_datasource", "unregister_datasource"]

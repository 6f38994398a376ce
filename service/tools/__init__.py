"""Tools the model may call: the registry, the built-ins, and loading more by import path."""

from __future__ import annotations

from service.tools.builtin import builtin_tools, default_registry
from service.tools.registry import Tool, ToolError, ToolHandler, ToolRegistry, load_tool

__all__ = [
    "Tool",
    "ToolError",
    "ToolHandler",
    "ToolRegistry",
    "builtin_tools",
    "default_registry",
    "load_tool",
]

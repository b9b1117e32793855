"""The method table: every merge method merge_tool knows, by mergekit's name.

Why one table: the CLI's --method choices, the mergekit YAML reader, the
planner's checks (base model, model count, parameters and their ranges) and
the recorded config all come from these entries. A new method is one module
(a `Method` and its kernel, see `base`) plus one line here.
"""

from __future__ import annotations

from ..errors import MergeError
from .base import REQUIRED, Args, Block, Kernel, Method, Param, TensorPass
from .breadcrumbs import BREADCRUMBS, BREADCRUMBS_TIES
from .linear import LINEAR
from .slerp import SLERP
from .task_vectors import DARE_LINEAR, DARE_TIES, TASK_ARITHMETIC, TIES

METHODS: dict[str, Method] = {
    m.name: m
    for m in (LINEAR, TASK_ARITHMETIC, TIES, DARE_TIES, DARE_LINEAR, SLERP, BREADCRUMBS, BREADCRUMBS_TIES)
}
ALIASES: dict[str, str] = {alias: m.name for m in METHODS.values() for alias in m.aliases}


def lookup(name: str) -> Method:
    """The table entry for a method name or alias, or a MergeError listing the known ones."""
    method = METHODS.get(ALIASES.get(name, name)) if isinstance(name, str) else None
    if method is None:
        raise MergeError(f"unknown method {name!r}; use one of {', '.join(METHODS)}")
    return method


__all__ = [
    "ALIASES",
    "METHODS",
    "REQUIRED",
    "Args",
    "Block",
    "Kernel",
    "Method",
    "Param",
    "TensorPass",
    "lookup",
]

"""Dataclasses to and from plain dicts (bundle headers, JSON records, resume keys).

Every config / spec dataclass round-trips through these two functions, so they all share one
rule for files written by other versions: keys a class does not know are ignored (a newer
file), keys it lacks take the class default (an older file) or a stated legacy value.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, TypeVar

import numpy as np

T = TypeVar("T")


def dataclass_to_dict(obj) -> dict:
    """A JSON-ready dict of the dataclass instance ``obj``: every field, in declaration order;
    nested dataclasses become dicts, tuples lists, numpy scalars / arrays Python numbers /
    lists."""
    return _plain(dataclasses.asdict(obj))


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    return v


def dataclass_from_dict(
    cls: type[T],
    d: Mapping[str, Any] | None,
    *,
    legacy: Mapping[str, Any] | None = None,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
) -> T:
    """An instance of the dataclass ``cls`` from ``d`` (None: empty).

    Keys that are not fields of ``cls`` are ignored. A field missing from ``d`` takes its
    ``legacy`` value when one is given (what files written before the field existed meant),
    else the field's default; TypeError when a field without default is missing.
    convert: field -> function applied to the value (given or legacy) before construction,
    e.g. ``{"sigmas": tuple}`` or a nested class's ``from_dict``.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    values = {k: v for k, v in (legacy or {}).items() if k in names}
    values.update({k: d[k] for k in names if d is not None and k in d})
    for k, fn in (convert or {}).items():
        if k in values:
            values[k] = fn(values[k])
    return cls(**values)

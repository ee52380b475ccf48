"""Every configuration field gets a type and a range, checked before any work starts.

The type comes from the dataclass annotation (bool, int, float, str, a list of them, or `X | None`); the range from
`LIMITS` below (shared by every dataclass that uses the name) or a dataclass's own `LIMITS` class attribute, else
the default rule: an int is at least 1, a float is finite and at least 0. A value that breaks either gets one line
naming the field and what it accepts. YAML quirks are forgiven where they are unambiguous: "1e-5" (a string to
YAML 1.1) is read as a number and 10.0 as the int 10; "false" is not read as a bool, 1.5 is not an int.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """An accepted range: lo / hi bounds (inclusive unless *_open), choices for strings, a note for the message."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    nonempty: bool = True          # lists: at least one element
    distinct: bool = False         # lists: no repeats
    contains: tuple = ()           # lists: must hold these values
    note: str = ""

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return "any value"

    def admits(self, x) -> bool:
        if self.choices is not None:
            return x in self.choices
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


POSITIVE_INT = Limit(lo=1)
NON_NEGATIVE = Limit(lo=0)
POSITIVE = Limit(lo=0, lo_open=True)
FRACTION_OPEN = Limit(lo=0, hi=1, lo_open=True, hi_open=True)
DROPOUT = Limit(lo=0, hi=1, hi_open=True)

# Field names mean the same thing in every dataclass that has them.
LIMITS: dict[str, Limit] = {
    "objective": Limit(choices=("ranking", "rating")),
    "split": Limit(choices=("chronological", "random", "kfold", "ml100k-folds")),
    "tie_order": Limit(choices=("file", "shuffled")),
    "device": Limit(note="auto, cpu, cuda or cuda:N"),
    "precision": Limit(choices=("auto", "bf16", "fp32")),
    "seed": Limit(lo=0, hi=2**32 - 1),
    "k": Limit(lo=2, hi=100),
    "fold": Limit(lo=1, hi=100),
    "test_frac": FRACTION_OPEN,
    "valid_frac": FRACTION_OPEN,
    "max_len": Limit(lo=1, hi=100_000),
    "ks": Limit(lo=1, hi=10_000, distinct=True, contains=(10,),
                note="validation selects on NDCG@10"),
    "lr": POSITIVE,
    "dropout": DROPOUT,
    "hidden_dropout": DROPOUT,
    "attn_dropout": DROPOUT,
    "dt_min": POSITIVE,
    "dt_max": POSITIVE,
    "time_unit": POSITIVE,
    "layer_norm_eps": POSITIVE,
    "initializer_range": POSITIVE,
    "cpu_threads": Limit(lo=1, hi=1024),
}


class FieldError(ValueError):
    """One field's value has the wrong type or is out of range; the message names the field and what it accepts."""


def _limit(cls, name: str) -> Limit | None:
    own = getattr(cls, "LIMITS", None)
    if isinstance(own, dict) and name in own:
        return own[name]
    return LIMITS.get(name)


def _number(name: str, value, kind: type, accepts: str):
    if isinstance(value, bool) or value is None:
        raise FieldError(f"{name} must be {accepts}, not {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FieldError(f"{name} must be {accepts}, not {value!r}") from None
    if not isinstance(value, (int, float)):
        raise FieldError(f"{name} must be {accepts}, not {value!r}")
    if not math.isfinite(value):
        raise FieldError(f"{name} must be {accepts}, not {value!r}")
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise FieldError(f"{name} must be {accepts} (a whole number), not {value!r}")
            value = int(value)
        return int(value)
    return float(value)


def _accepts(kind, limit: Limit | None) -> str:
    word = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    if kind is bool or limit is None:
        return word
    if limit.note and limit.choices is None and limit.lo is None and limit.hi is None:
        return limit.note
    return f"{word} {limit.describe()}"


def check_value(cls, name: str, value, annotation):
    """`value` converted to the field's type and checked against its range; FieldError names what is accepted."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
        origin = typing.get_origin(annotation)
    if value is None:
        if optional:
            return None
        raise FieldError(f"{name} must be set (null is not allowed)")
    limit = _limit(cls, name)
    if origin in (list, tuple):
        (elem,) = typing.get_args(annotation)[:1] or (float,)
        if not isinstance(value, (list, tuple)):
            raise FieldError(f"{name} must be a list ([1, 2, ...]), not {value!r}")
        if limit is None:
            limit = POSITIVE_INT if elem is int else NON_NEGATIVE
        if limit.nonempty and not value:
            raise FieldError(f"{name} must be a non-empty list, not []")
        out = [_scalar(cls, f"{name}[{i}]", v, elem, limit) for i, v in enumerate(value)]
        if limit.distinct and len(set(out)) != len(out):
            raise FieldError(f"{name} must not repeat a value, not {value!r}")
        missing = [c for c in limit.contains if c not in out]
        if missing:
            raise FieldError(f"{name} must include {', '.join(map(str, missing))}"
                             f"{' (' + limit.note + ')' if limit.note else ''}, not {value!r}")
        return type(value)(out) if isinstance(value, tuple) else out
    return _scalar(cls, name, value, annotation, limit)


def _scalar(cls, name: str, value, kind, limit: Limit | None):
    if kind is bool:
        if not isinstance(value, bool):
            raise FieldError(f"{name} must be true or false, not {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise FieldError(f"{name} must be a string, not {value!r}")
        if limit is not None and limit.choices is not None and value not in limit.choices:
            raise FieldError(f"{name} must be {limit.describe()}, not {value!r}")
        return value
    if kind in (int, float):
        if limit is None or (limit.choices is None and limit.lo is None and limit.hi is None):
            limit = POSITIVE_INT if kind is int else NON_NEGATIVE
        accepts = _accepts(kind, limit)
        x = _number(name, value, kind, accepts)
        if not limit.admits(x):
            raise FieldError(f"{name} must be {accepts}, not {value!r}")
        return x
    return value  # an annotation this checker does not know: left to the dataclass's own checks


def check_fields(obj):
    """A copy of dataclass `obj` with every field converted and checked (FieldError on the first bad one)."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        values[f.name] = check_value(cls, f.name, getattr(obj, f.name), hints[f.name])
    return dataclasses.replace(obj, **values)

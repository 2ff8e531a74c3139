"""Compiled infix operators: boolean logic, equality, comparison, arithmetic.

- ``and or xor implies``: three-valued logic over singleton booleans
  (http://hl7.org/fhirpath/N1/#boolean-logic); compiled only when both sides are typed boolean.

Both operands are always evaluated (no short circuit), as in fhirpathpy, so an error on
either side surfaces the same way in both tiers.
- ``= !=``: empty if either side is empty, false if sizes differ, else item-wise equality
  (http://hl7.org/fhirpath/N1/#equality); date/time values compare with precision rules.
- ``< > <= >=``: singletons of the same kind (number, string, date/dateTime, time).
- ``+ - * / div mod &``: numbers (``/`` always gives a decimal, division by zero gives empty,
  http://hl7.org/fhirpath/N1/#math) and string ``+``/``&``. Decimals are computed, and
  returned, as :class:`decimal.Decimal` (a float operand taken by its shortest repr), so
  ``0.1 + 0.2`` is ``0.3`` and ``1.50 * 2`` keeps its digits.

A FHIR decimal reaches an operator as a Decimal or a float, depending on how the resource was
parsed; numbers are compared through :func:`~.operands.comparable_numbers`, so both give the
same result.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath import types
from dic_connector.sqlonfhir.fhirpath.compile_context import (
    Compiled,
    Compiler,
    Scope,
    Unsupported,
    constant_value,
)
from dic_connector.sqlonfhir.fhirpath.env import Collection, Env, Evaluator
from dic_connector.sqlonfhir.fhirpath.functions import temporal_compare
from dic_connector.sqlonfhir.fhirpath.operands import (
    comparable_numbers,
    equal_items,
    number_equal,
    singleton,
    to_decimal,
)

_ORDER: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0, ">": lambda c: c > 0, "<=": lambda c: c <= 0, ">=": lambda c: c >= 0,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
}


def _operands(left_fn: Evaluator, right_fn: Evaluator, focus: Collection,
              env: Env) -> tuple[Any, Any]:
    """Both singleton operands, or a None when either side is empty.

    Both sides are evaluated (errors inside either surface), then emptiness is checked before
    multiplicity, as fhirpathpy does: ``{} + (a | b)`` is empty, not an error.
    """
    left = left_fn(focus, env)
    right = right_fn(focus, env)
    if not left or not right:
        return None, None
    return singleton(left), singleton(right)


def _same_kind(left: str | None, right: str | None) -> str:
    a, b = types.kind(left), types.kind(right)
    if a is None or b is None:
        raise Unsupported("operand of unknown type")
    if {a, b} <= {"date", "dateTime"}:
        return "dateTime" if "dateTime" in (a, b) else "date"
    if a != b:
        raise Unsupported("operands of different kinds")
    return a


def compile_binary(node: ast.Binary, focus_type: str | None, scope: Scope,
                   compiler: Compiler) -> Compiled:
    """Compile ``left op right``, both operands through ``compiler``; Unsupported if unsure."""
    left_fn, left_type = compiler.compile_node(node.left, focus_type, scope)
    right_fn, right_type = compiler.compile_node(node.right, focus_type, scope)
    op = node.op
    if op in ("and", "or", "xor", "implies"):
        if types.kind(left_type) != "boolean" or types.kind(right_type) != "boolean":
            raise Unsupported("logic on non-boolean operands")
        return _logic(op, left_fn, right_fn), "System.Boolean"
    if op in ("=", "!="):
        return _equality(op == "!=", left_fn, right_fn, _same_kind(left_type, right_type),
                         constant_value(node.right, scope)), "System.Boolean"
    if op in _ORDER:
        kind = _same_kind(left_type, right_type)
        if kind == "boolean":
            raise Unsupported("ordering booleans")
        return _comparison(op, left_fn, right_fn, kind), "System.Boolean"
    if op in ("+", "-", "*", "/", "div", "mod", "&"):
        return _arithmetic(op, left_fn, right_fn, left_type, right_type)
    raise Unsupported(f"operator {op}")


def _logic(op: str, left_fn: Evaluator, right_fn: Evaluator) -> Evaluator:
    def run(focus: Collection, env: Env) -> Collection:
        a = singleton(left_fn(focus, env))
        b = singleton(right_fn(focus, env))
        if op == "and" and a is False:
            return [False]
        if op == "or" and a is True:
            return [True]
        if op == "implies" and a is False:
            return [True]
        if op == "and":
            return [False] if b is False else ([True] if a is True and b is True else [])
        if op == "or":
            return [True] if b is True else ([False] if a is False and b is False else [])
        if op == "xor":
            return [] if a is None or b is None else [a != b]
        if b is True:
            return [True]
        return [False] if a is True and b is False else []

    return run


def _equality(negate: bool, left_fn: Evaluator, right_fn: Evaluator, kind: str,
              right_constant: Collection | None = None) -> Evaluator:
    if right_constant is not None and len(right_constant) == 1 and kind in (
            "string", "boolean", "number"):
        wanted = right_constant[0]
        same = number_equal if kind == "number" else operator.eq

        def against_constant(focus: Collection, env: Env) -> Collection:
            a = left_fn(focus, env)
            if not a:
                return []
            if len(a) != 1:
                return [negate]
            return [bool(same(a[0], wanted)) != negate]

        return against_constant

    def run(focus: Collection, env: Env) -> Collection:
        a = left_fn(focus, env)
        b = right_fn(focus, env)
        if not a or not b:
            return []
        if len(a) != len(b):
            return [negate]
        unknown = False
        for x, y in zip(a, b, strict=True):
            same = equal_items(x, y, kind)
            if same is False:
                return [negate]
            unknown = unknown or same is None
        return [] if unknown else [not negate]

    return run


def _comparison(op: str, left_fn: Evaluator, right_fn: Evaluator, kind: str) -> Evaluator:
    if kind in ("date", "dateTime", "time"):
        test = _ORDER[op]
        is_time = kind == "time"

        def temporal(focus: Collection, env: Env) -> Collection:
            a, b = _operands(left_fn, right_fn, focus, env)
            if a is None or b is None:
                return []
            order = temporal_compare(a, b, is_time)
            return [] if order is None else [test(order)]

        return temporal
    compare = _COMPARE[op]

    def plain(focus: Collection, env: Env) -> Collection:
        a, b = _operands(left_fn, right_fn, focus, env)
        if a is None or b is None:
            return []
        if kind == "number":
            a, b = comparable_numbers(a, b)
        return [compare(a, b)]

    return plain


def _arithmetic(op: str, left_fn: Evaluator, right_fn: Evaluator, left_type: str | None,
                right_type: str | None) -> Compiled:
    kinds = (types.kind(left_type), types.kind(right_type))
    if op == "&" or (op == "+" and kinds == ("string", "string")):
        if kinds != ("string", "string"):
            raise Unsupported("& on non-strings")
        concat_empty = op == "&"

        def concat(focus: Collection, env: Env) -> Collection:
            if concat_empty:
                a = singleton(left_fn(focus, env)) or ""
                b = singleton(right_fn(focus, env)) or ""
                return [a + b]
            a, b = _operands(left_fn, right_fn, focus, env)
            return [] if a is None or b is None else [a + b]

        return concat, "System.String"
    if kinds != ("number", "number"):
        raise Unsupported("arithmetic on non-numbers")
    integral = left_type in types.INTEGER_TYPES and right_type in types.INTEGER_TYPES
    if op == "/":
        integral = False
    if op in ("div", "mod") and not integral:
        raise Unsupported("decimal div/mod")

    def run(focus: Collection, env: Env) -> Collection:
        a, b = _operands(left_fn, right_fn, focus, env)
        if a is None or b is None:
            return []
        if integral:
            if op == "+":
                return [a + b]
            if op == "-":
                return [a - b]
            if op == "*":
                return [a * b]
            if b == 0:
                return []
            quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
            return [quotient if op == "div" else a - b * quotient]
        x, y = to_decimal(a), to_decimal(b)
        if op == "+":
            return [x + y]
        if op == "-":
            return [x - y]
        if op == "*":
            return [x * y]
        if y == 0:
            return []
        return [x / y]

    return run, "System.Integer" if integral else "System.Decimal"

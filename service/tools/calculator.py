"""A safe arithmetic evaluator for the calculator tool.

The expression is parsed with ``ast`` and walked node by node; only numbers,
arithmetic operators, and a fixed set of math functions and constants are
understood. Nothing is ever passed to ``eval``. Size guards keep a hostile
expression (``9**9**9``, deep nesting, a megabyte of digits) from eating CPU
or memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

Number = int | float

MAX_EXPRESSION_CHARS = 500
MAX_DEPTH = 60
# Integer results are capped at this many bits (about 3,000 decimal digits),
# below Python's 4,300-digit int-to-str limit.
MAX_INT_BITS = 10_000
MAX_ROUND_DIGITS = 100

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int) or abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculationError(
            f"round() digits must be a whole number between -{MAX_ROUND_DIGITS} "
            f"and {MAX_ROUND_DIGITS}"
        )
    return round(x, ndigits)


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


# name -> (function, minimum arguments, maximum arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "sqrt": (math.sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


class CalculationError(ValueError):
    """The expression is not allowed or cannot be evaluated; the message says why."""


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression; raises CalculationError on anything else."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationError(
            f"expression is too long ({len(expression)} characters, at most {MAX_EXPRESSION_CHARS})"
        )
    if not expression.strip():
        raise CalculationError("expression is empty")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculationError(f"not a valid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise CalculationError("expression is too deeply nested") from None
    try:
        result = _eval(tree.body, 0)
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except OverflowError:
        raise CalculationError("the result is too large") from None
    except (ValueError, TypeError) as exc:
        if isinstance(exc, CalculationError):
            raise
        raise CalculationError(f"cannot compute: {exc}") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise CalculationError("the result is not a finite number")
    return result


def format_number(value: Number) -> str:
    """Integers as written; floats to 15 significant digits, without a trailing '.0'."""
    if isinstance(value, int):
        return str(value)
    text = format(value, ".15g")
    return "0" if text == "-0" else text


def _eval(node: ast.expr, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise CalculationError("expression is too deeply nested")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CalculationError(f"only numbers are allowed, not {value!r}")
        return _checked(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        operand = _eval(node.operand, depth + 1)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, depth + 1)
        right = _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        binary = _BINARY.get(type(node.op))
        if binary is None:
            raise CalculationError(f"operator {_describe(node.op)} is not allowed")
        return _checked(binary(left, right))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalculationError(f"unknown name {node.id!r}; constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.Call):
        return _call(node, depth)
    raise CalculationError(
        f"{_describe(node)} is not allowed; use numbers, + - * / // % ** and the math functions"
    )


def _call(node: ast.Call, depth: int) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else _describe(node.func)
        raise CalculationError(f"unknown function {name!r}; functions: {', '.join(_FUNCTIONS)}")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise CalculationError(f"{node.func.id}() takes plain positional arguments only")
    function, least, most = _FUNCTIONS[node.func.id]
    if not least <= len(node.args) <= most:
        expected = str(least) if least == most else f"{least} or {most}"
        raise CalculationError(
            f"{node.func.id}() takes {expected} argument(s), got {len(node.args)}"
        )
    args = [_eval(arg, depth + 1) for arg in node.args]
    try:
        return _checked(function(*args))
    except ValueError as exc:
        if isinstance(exc, CalculationError):
            raise
        raise CalculationError(f"{node.func.id}() is undefined for these arguments") from None


def _power(base: Number, exponent: Number) -> Number:
    # An exact integer power has about exponent*log2(|base|) bits: refuse
    # before computing rather than after.
    exact = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if exact and abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_INT_BITS:
        raise CalculationError(
            f"the power would be too large (results are limited to {MAX_INT_BITS} bits)"
        )
    result = base**exponent
    if isinstance(result, complex):
        raise CalculationError("the result is not a real number")
    return result


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculationError("the result is too large")
    return value


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access",
        ast.Lambda: "a lambda",
        ast.Subscript: "indexing",
        ast.Compare: "a comparison",
        ast.BoolOp: "a boolean operator",
        ast.IfExp: "a conditional expression",
    }
    return names.get(type(node), type(node).__name__)

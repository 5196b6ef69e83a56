"""Arithmetic from text, safely: the expression's syntax tree is walked, never evaluated."""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 10_000  # 2 ** 10_000 is instant; an unbounded power could take forever
MAX_RESULT_DIGITS = 4_300  # Python's own int-to-text limit
MAX_DEPTH = 50

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "floor": math.floor,
              "ceil": math.ceil, "log": math.log, "log10": math.log10, "exp": math.exp,
              "sin": math.sin, "cos": math.cos, "tan": math.tan}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class CalculatorError(ValueError):
    """The expression is not arithmetic this calculator does; the message says why."""


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression: numbers, + - * / // % **, parentheses, and a
    few math functions and constants. Anything else raises CalculatorError."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("The expression is empty.")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"The expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise CalculatorError("The expression is not valid arithmetic.") from None
    try:
        value = _value(tree.body, 0)
    except ZeroDivisionError:
        raise CalculatorError("Division by zero.") from None
    except OverflowError:
        raise CalculatorError("The result is too large.") from None
    except (ValueError, TypeError) as err:
        if isinstance(err, CalculatorError):
            raise
        raise CalculatorError(f"Not a valid calculation: {err}.") from None
    if isinstance(value, int) and abs(value).bit_length() > MAX_RESULT_DIGITS * 3.33:
        raise CalculatorError("The result is too large.")
    if isinstance(value, complex):
        raise CalculatorError("The result is not a real number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("The result is too large.")
    return value


def _value(node: ast.AST, depth: int) -> int | float:
    if depth > MAX_DEPTH:
        raise CalculatorError("The expression is nested too deeply.")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError("Only numbers are allowed.")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left, depth + 1), _value(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        elif isinstance(node.op, ast.Mult):
            _check_size(left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand, depth + 1))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _FUNCTIONS and not node.keywords and len(node.args) <= 2:
        return _FUNCTIONS[node.func.id](*(_value(a, depth + 1) for a in node.args))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    raise CalculatorError(f"'{_describe(node)}' is not allowed: arithmetic only.")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"Exponents are limited to {MAX_EXPONENT}.")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 \
            and abs(base).bit_length() * exponent > MAX_RESULT_DIGITS * 3.33:
        raise CalculatorError("The result is too large.")


def _check_size(left: int | float, right: int | float) -> None:
    if isinstance(left, int) and isinstance(right, int) and \
            abs(left).bit_length() + abs(right).bit_length() > MAX_RESULT_DIGITS * 3.33:
        raise CalculatorError("The result is too large.")


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return f"{node.func.id}(…)"
    return type(node).__name__

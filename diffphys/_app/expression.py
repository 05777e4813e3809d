"""Safe arithmetic expressions of the grid coordinates, for fields written in case files.

``"exp(-(x - 0.3)**2 / 0.01) + 0.5 * sin(2 * pi * y)"`` is parsed with :mod:`ast` and evaluated with
NumPy; only numbers, the coordinates ``x`` (and ``y``), the constants ``pi`` and ``e``, arithmetic,
comparisons and a fixed list of functions are allowed, so a case file cannot run arbitrary code.
"""

from __future__ import annotations

import ast
import operator

import numpy as np

__all__ = ["FUNCTIONS", "ExpressionError", "evaluate"]

FUNCTIONS = {
    name: getattr(np, name)
    for name in ("sin", "cos", "tan", "exp", "log", "sqrt", "abs", "tanh", "sinh", "cosh", "arctan",
                 "minimum", "maximum", "where")
}
_CONSTANTS = {"pi": np.pi, "e": np.e}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}


class ExpressionError(ValueError):
    """An expression that cannot be parsed or uses something not allowed."""


def _allowed(variables) -> str:
    return (f"numbers, {', '.join(variables)}, pi, e, + - * / ** %, comparisons and the functions "
            f"{', '.join(FUNCTIONS)}")


def evaluate(text: str, variables: dict[str, np.ndarray]):
    """Evaluate ``text`` with ``variables`` (e.g. ``{"x": X, "y": Y}``) to a real number or array.

    Raises :class:`ExpressionError` for anything that is not allowed, cannot be evaluated (``1/0``,
    ``10.0**400``, a function given the wrong arguments) or is not real (``(-1.0)**0.5``).
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"cannot parse the expression {text!r} ({error.msg})") from None

    def visit(node):
        if isinstance(node, ast.Expression):
            return visit(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id in variables:
                return variables[node.id]
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            raise ExpressionError(f"unknown name {node.id!r} in {text!r}; expressions may use {_allowed(variables)}")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](visit(node.left), visit(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](visit(node.operand))
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            left, result = visit(node.left), True
            for op, right in zip(node.ops, node.comparators):
                right = visit(right)
                result = np.logical_and(result, _COMPARE[type(op)](left, right))
                left = right
            return result
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                and not node.keywords):
            return FUNCTIONS[node.func.id](*(visit(a) for a in node.args))
        raise ExpressionError(
            f"{ast.unparse(node)!r} is not allowed in the expression {text!r}; expressions may use {_allowed(variables)}"
        )

    with np.errstate(all="ignore"):
        try:
            value = visit(tree)
        except ExpressionError:
            raise
        # TypeError/ValueError: a function called with the wrong arguments; ArithmeticError: Python-number
        # arithmetic such as 1/0 or 10.0**400 (NumPy arrays give inf/NaN instead, refused by the caller).
        except (TypeError, ValueError, ArithmeticError) as error:
            raise ExpressionError(f"cannot evaluate {text!r}: {type(error).__name__}: {error}") from None
    if np.iscomplexobj(value):
        raise ExpressionError(f"{text!r} evaluates to a complex number (e.g. a negative number to a fractional "
                              "power); a field must be real")
    if not isinstance(value, (float, np.ndarray, np.generic)):
        raise ExpressionError(f"{text!r} does not evaluate to a number or a field (got {type(value).__name__}); "
                              "check the functions' arguments, e.g. where(condition, a, b)")
    return value

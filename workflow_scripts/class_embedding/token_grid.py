"""A token grid's shape as configs give it (a side, or [rows, cols]) and its name in file names.

Ground floor: the dataset preparation (token labels) and the models' token layout both read it.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError


def grid_value(grid: Any, what: str) -> int | tuple[int, int]:
    """A token grid given as a side, as [rows, cols] or as (rows, cols): the side when the grid is
    square, else (rows, cols); InputError naming ``what`` for anything else."""
    sides = list(grid) if isinstance(grid, list | tuple) else [grid]
    if len(sides) not in (1, 2) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides):
        raise InputError(
            f"{what} is {grid!r}: give the side of a square token grid or [rows, cols], positive integers."
        )
    return sides[0] if len(set(sides)) == 1 else (sides[0], sides[1])


def grid_shape(grid: Any) -> tuple[int, int]:
    """(rows, cols) of a token grid as :func:`grid_value` takes it."""
    value = grid_value(grid, "token_grid")
    return (value, value) if isinstance(value, int) else value


def grid_name(grid: Any) -> str:
    """The grid in file names: the side of a square grid (as before non-square grids), else RxC."""
    rows, cols = grid_shape(grid)
    return str(rows) if rows == cols else f"{rows}x{cols}"


def parse_grid_name(name: str) -> tuple[int, int]:
    """(rows, cols) of a :func:`grid_name`."""
    rows, _, cols = name.partition("x")
    return int(rows), int(cols or rows)

"""Tables that stay readable where they are read: a table when it fits the terminal (or the 80 columns a
CI log gets), otherwise one block per row, every value whole (long values fold onto the next line, none
is cut with "…").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Cell = str | Text
Justify = Literal["left", "right", "center"]


@dataclass(frozen=True)
class Column:
    name: str
    justify: Justify = "left"
    style: str = ""


@dataclass
class Rows:
    """A table's content, rendered by :func:`render` in whichever layout fits. The first column names
    the row (a host) and heads its block."""

    title: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)
    # a row's message (e.g. why a host is unreachable), shown under it with this label
    notes: dict[int, Cell] = field(default_factory=dict)
    note_label: str = "note"

    def add(self, *cells: Cell, note: Cell | None = None) -> None:
        self.rows.append(list(cells) + [""] * (len(self.columns) - len(cells)))
        if note is not None:
            self.notes[len(self.rows) - 1] = note


def _table(rows: Rows) -> Table:
    table = Table(title=rows.title)
    for c in rows.columns:
        table.add_column(c.name, justify=c.justify, style=c.style or None, no_wrap=True, overflow="fold")
    for i, row in enumerate(rows.rows):
        note = rows.notes.get(i)
        if note is not None and not any(str(c) for c in row[1:]):
            table.add_row(row[0], note, *row[2:])  # only a note: it takes the row's first value cell
            continue
        table.add_row(*row)
        if note is not None:
            table.add_row("", note, *[""] * (len(rows.columns) - 2))
    return table


def _blocks(rows: Rows) -> Group:
    parts: list[RenderableType] = [Text(rows.title, style="bold italic")]
    for i, row in enumerate(rows.rows):
        head = row[0] if isinstance(row[0], Text) else Text(row[0], style="bold")
        parts.append(head)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for col, cell in zip(rows.columns[1:], row[1:], strict=True):
            value = cell if isinstance(cell, Text) else Text(cell, style=col.style)
            if value.plain:
                grid.add_row(Text(f"  {col.name}", style="dim"), value)
        note = rows.notes.get(i)
        if note is not None:
            grid.add_row(Text(f"  {rows.note_label}", style="dim"), note)
        parts.append(grid)
    return Group(*parts)


def fits(console: Console, rows: Rows) -> bool:
    natural = Measurement.get(console, console.options.update_width(10_000), _table(rows)).maximum
    return natural <= console.width


def render(console: Console, rows: Rows) -> RenderableType:
    """A table when the table fits the console's width, else one block per row."""
    return _table(rows) if fits(console, rows) else _blocks(rows)

"""Errors as values with a location: file, key and column, rendered only by the CLI."""

from __future__ import annotations


class DerivationError(Exception):
    """An invalid derivation file or expression, located as precisely as we can.

    ``column`` is 1-based and counts characters of the expression string (or of
    the TOML line when the TOML itself is malformed).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key
        self.column = column
        self.hint = hint

    def located(self, *, file: str | None = None, key: str | None = None) -> DerivationError:
        """Fill in the file and key where they were not known at raise time."""
        if self.file is None:
            self.file = file
        if self.key is None:
            self.key = key
        return self

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.key:
            parts.append(f"[{self.key}]")
        if self.column is not None:
            parts.append(f"column {self.column}")
        return ", ".join(parts)

    def __str__(self) -> str:
        text = self.message
        where = self.where()
        if where:
            text = f"{where}: {text}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ShapeError(DerivationError):
    """An expression is ill-shaped, or a claim's shape cannot be the gradient's."""


class LimitError(DerivationError):
    """A file exceeds one of the bounds that keep hostile input cheap."""

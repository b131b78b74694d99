"""A logger for tests: keeps every line it is given, and the warnings apart."""

from __future__ import annotations


class LogLines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append(msg)
        self.warnings.append(msg)

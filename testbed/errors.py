"""Exception hierarchy of the controller: one root, one branch per layer."""

from __future__ import annotations

from drivers.errors import DriverError, TestbedError

__all__ = [
    "AnalysisError",
    "ConfigError",
    "DriverError",
    "LeaseError",
    "RunError",
    "StoreError",
    "TestbedError",
]


class ConfigError(TestbedError):
    """A profile or lab file is invalid, or they cannot be bound together.

    ``problems`` holds one line per problem, each naming the file, line and field.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RunError(TestbedError):
    """The run could not proceed (infrastructure, not the system under test)."""


class LeaseError(RunError):
    """A device is leased by another run."""


class StoreError(TestbedError):
    """The run record or the run index could not be read or written."""


class AnalysisError(TestbedError):
    """A capture or measurement file could not be analysed."""

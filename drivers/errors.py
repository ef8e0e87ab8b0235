"""The exception root shared by the controller and its drivers.

It lives here, in the lower layer, because drivers must not import :mod:`testbed`;
:mod:`testbed.errors` re-exports it and adds the controller's own branches.
"""

from __future__ import annotations

from collections.abc import Sequence


class TestbedError(Exception):
    """Root of every error the testbed raises on purpose."""

    __test__ = False  # not a pytest test class, despite the name


class DriverError(TestbedError):
    """A device misbehaved or could not be reached.

    Carries the device name and its last wire exchanges so that the message alone is
    enough to tell which instrument failed and what it last said.
    """

    def __init__(self, device: str, message: str, exchanges: Sequence[str] = ()) -> None:
        self.device = device
        self.exchanges = tuple(exchanges)
        text = f"{device}: {message}"
        if self.exchanges:
            text += " (last exchanges: " + " | ".join(self.exchanges[-3:]) + ")"
        super().__init__(text)

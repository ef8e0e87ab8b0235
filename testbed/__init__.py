"""Hardware-in-the-loop testbed controller for mission-critical communications labs."""

__version__ = "0.1.0"

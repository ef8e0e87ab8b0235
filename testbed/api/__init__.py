"""The dashboard API and web dashboard (``testbed serve``)."""

from testbed.api.app import create_app
from testbed.api.config import ApiConfig

__all__ = ["ApiConfig", "create_app"]

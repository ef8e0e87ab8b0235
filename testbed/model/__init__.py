"""Profiles and labs: strict pydantic models, their YAML loader and their JSON Schemas."""

from testbed.model.lab import CapturePoint, Device, Endpoint, Lab, Link, Node
from testbed.model.loader import load_any, load_lab, load_profile
from testbed.model.profile import Impairment, Kpi, Profile, Stream, TimelineEvent

__all__ = [
    "CapturePoint",
    "Device",
    "Endpoint",
    "Impairment",
    "Kpi",
    "Lab",
    "Link",
    "Node",
    "Profile",
    "Stream",
    "TimelineEvent",
    "load_any",
    "load_lab",
    "load_profile",
]

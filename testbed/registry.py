"""The driver registry: ``(kind, driver)`` -> ``"module:Class"``, imported only when used.

Built-in drivers are listed here; more come from the entry-point group ``testbed.drivers``
(names ``"<kind>.<driver>"``), so a lab can use a third-party driver without any change to
the controller.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from drivers.base import Device
from testbed.errors import ConfigError

ENTRY_POINT_GROUP = "testbed.drivers"

BUILTIN: dict[tuple[str, str], str] = {
    ("network", "emulated"): "drivers.network.emulated:EmulatedNetwork",
    ("traffic", "emulated"): "drivers.traffic.emulated:EmulatedTraffic",
    ("capture", "dumpcap"): "drivers.capture.dumpcap:DumpcapCapture",
    ("impairment", "emulated"): "drivers.impairment.emulated:EmulatedImpairment",
    ("impairment", "netem"): "drivers.impairment.netem:NetemImpairment",
    ("impairment", "scpi"): "drivers.impairment.scpi:ScpiImpairment",
    ("mcptt", "emulated"): "drivers.mcptt.emulated:EmulatedMcptt",
    ("radio", "at"): "drivers.radio.modem:AtModem",
    ("radio", "pei"): "drivers.tetra.pei:PeiTerminal",
    ("core", "tetra_emulated"): "drivers.tetra.emulated_swmi:EmulatedSwmi",
    ("core", "open5gs"): "drivers.core.open5gs:Open5gsCore",
    ("core", "amarisoft"): "drivers.core.amarisoft:AmarisoftCore",
    ("attenuator", "scpi"): "drivers.instrument.attenuator:ScpiAttenuator",
    ("power_supply", "scpi"): "drivers.instrument.power_supply:ScpiPowerSupply",
    ("scpi", "generic"): "drivers.instrument.generic:GenericScpi",
}


@cache
def targets() -> dict[tuple[str, str], str]:
    """Every known driver: built-ins, overridden by installed entry points."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind, _, driver = ep.name.partition(".")
        if kind and driver:
            found[(kind, driver)] = ep.value
    return found


def driver_class(kind: str, driver: str) -> type[Device]:
    target = targets().get((kind, driver))
    if target is None:
        known = ", ".join(f"{k}/{d}" for k, d in sorted(targets()))
        raise ConfigError([f"no driver {driver!r} for kind {kind!r} (known: {known})"])
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # a broken driver module is a configuration problem
        raise ConfigError([f"driver {kind}/{driver} ({target}) cannot be loaded: {exc}"]) from exc
    if not (isinstance(cls, type) and issubclass(cls, Device)):
        raise ConfigError([f"driver {kind}/{driver} ({target}) is not a Device class"])
    return cls


def catalog(kind: str, driver: str) -> frozenset[str] | None:
    """The actions of a driver, or None when there is no such driver (for the planner)."""
    if (kind, driver) not in targets():
        return None
    return driver_class(kind, driver).actions

"""Lab instruments spoken to over SCPI through pyvisa: a programmable RF attenuator
(:mod:`~drivers.instrument.attenuator`), a DC power supply that powers the radios under
test (:mod:`~drivers.instrument.power_supply`) and a generic device driven by a command map
from the lab file (:mod:`~drivers.instrument.generic`), with what they share in
:mod:`~drivers.instrument.common`. Each speaks to a real box (a VISA resource), to a
pyvisa-sim definition (``sim/*.yaml``) or to an emulator process of
:mod:`drivers.scpi.emulator` it starts itself, whose state file couples it to the emulated
radios.
"""

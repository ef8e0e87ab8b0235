"""TETRA (ETSI EN 300 392) support: the PEI terminal driver, the emulated switching and
management infrastructure (SwMI) with its driver, the terminal emulator that serves the PEI,
and the code tables of EN 300 392-5 they share (:mod:`drivers.tetra.tables`)."""

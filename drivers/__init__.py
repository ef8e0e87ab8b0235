"""Device drivers of the testbed controller: one sub-package per device kind.

Drivers never import :mod:`testbed`; the controller reaches them through the driver
registry (``(kind, driver)`` -> ``module:Class``), so each driver can also be used alone.
"""

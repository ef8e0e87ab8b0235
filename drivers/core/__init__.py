"""LTE/5G cores: the emulated core process and the drivers of real cores (Open5GS over its
WebUI REST API and Prometheus/JSON metrics, Amarisoft over its WebSocket remote API).

The emulated core serves the same management interfaces as the products it stands for, so the
real drivers are tested against it; it also attaches the emulated modems, carries their user
plane through a TUN device (killing it drops their traffic) and admits bearers with ARP
pre-emption. See docs/cores.md.
"""

"""Packet capture drivers: dumpcap at named capture points, pcapng into the run record."""

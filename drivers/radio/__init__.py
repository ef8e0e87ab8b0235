"""Radio terminals driven over AT command ports: LTE modems (3GPP TS 27.007) and their emulator."""

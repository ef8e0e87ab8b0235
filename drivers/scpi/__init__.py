"""SCPI instruments: a reusable instrument emulator and a small session over pyvisa.

:mod:`drivers.scpi.emulator` serves an instrument described by a declarative table of
settings over a raw TCP socket (the way ``TCPIP::host::port::SOCKET`` resources talk), so
the emulated lab and the tests can drive the same command language as the real boxes;
:mod:`drivers.scpi.client` is the session the SCPI drivers use to talk to either.
"""

"""Traffic generation and measurement for the testbed: the active probe stream
(:mod:`drivers.traffic.probe`) that senders and receivers run inside network namespaces to measure
one-way delay, loss, jitter, reordering and gaps, plus the traffic drivers the controller loads.
"""

"""The emulated impairment appliance: this lab's kernel has no netem, so a user-space relay
(:mod:`drivers.impairment.relay`) sits in the wire of each impaired link, bridging the two ports
of the link's middle namespace and delaying, dropping, duplicating, reordering and rate-limiting
each direction independently as :class:`drivers.impairment.params.ImpairmentParams` describe,
under the control of the driver in :mod:`drivers.impairment.emulated`.
"""

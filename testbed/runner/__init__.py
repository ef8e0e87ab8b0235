"""The runner: opens devices, builds the network, runs the timeline, always tears down."""

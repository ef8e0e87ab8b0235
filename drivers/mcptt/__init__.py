"""Mission-critical push-to-talk (3GPP MCPTT): the floor control and call control messages of
TS 24.380, an emulated MCPTT server, and clients that run inside the UE nodes."""

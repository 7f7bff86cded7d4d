"""Forwarding to SIEMs: what leaves (items), in which format, over which transport, and the delivery loop."""

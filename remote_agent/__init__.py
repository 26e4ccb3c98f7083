"""The host side of offload: a small standard-library-only agent.

It is shipped to the host by content hash and started with the host's own Python over one SSH exec
channel (or as a local subprocess for the CPU fallback). It speaks JSON lines (see protocol.py).
"""

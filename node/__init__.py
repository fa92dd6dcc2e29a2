"""Sealbox's I/O layer, in packages that import one way (``scripts/test`` enforces it with import-linter):

    node.cli     the command line
    node.daemon  the long-running node: its control API, config, logs
    node.net     libp2p host, DHT, block exchange, the network get      node.files  add, get
    node.store   the repo: blocks, pins, leases, gc, checks and repair
    protocol     (outside node/) formats, tree walk and wire sessions, pure and synchronous

A package may import those below it, never those above it; ``net`` and ``files`` do not import each other.
"""

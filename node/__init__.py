"""Sealbox's I/O layer: the local repo, the block store and the command line (the network comes next)."""

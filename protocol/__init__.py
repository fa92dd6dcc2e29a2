"""Sealbox's pure protocol layer: formats and decisions, no I/O.

Every module here is synchronous and touches neither disk nor network; ``node/`` drives it.
"""

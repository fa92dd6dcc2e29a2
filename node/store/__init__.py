"""The repo on disk: the block store and its packs, pins, leases, the storage limit, gc, the tree walk over
stored blocks, and repo check and repair."""

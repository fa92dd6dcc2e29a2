"""Files in and out: ``add`` reads, chunks and seals a file or folder into the store; ``get`` opens a
stored tree and writes it (direct writes, worker pools, allocator settings)."""

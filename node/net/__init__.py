"""The network: the libp2p host and its Noise session, the node identity, the DHT, the block exchange
(server and fetcher) and the network get; py-libp2p is patched in one place (``libp2p_patches``)."""

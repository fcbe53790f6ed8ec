"""p2p-offers: a peer-to-peer USD/BTC OTC exchange on a BEP44-validating Kademlia DHT."""

__version__ = "0.1.0"

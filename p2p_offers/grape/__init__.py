"""The grape: a Kademlia DHT node that verifies BEP44 records, behind Grenache's HTTP API."""

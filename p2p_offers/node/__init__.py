"""The exchange node: keys, the REST API, the network book and settlement of bids on own offers."""

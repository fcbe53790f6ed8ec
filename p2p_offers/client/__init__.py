"""Clients of a node's REST API: the event stream reader and the trading CLI."""

"""Propagation of record versions over a bounded neighbour set, as a pure core.

Nothing here opens a socket, starts a thread or reads a clock: the clock and
the random source are injected and every step returns the ``(peer, message)``
pairs to send. The node runs it over its peer transport; ``sim`` runs the very
same code for a thousand nodes on a simulated network. See docs/gossip.md.
"""

"""A test bed of real hosts (network namespaces) on an emulated WAN; shared by tests and benches."""

from p2p_offers.testbed.bed import Conditions, Host, TestBed, TestBedError, cleanup_leftovers
from p2p_offers.testbed.netns import missing_requirements

__all__ = [
    "Conditions",
    "Host",
    "TestBed",
    "TestBedError",
    "cleanup_leftovers",
    "missing_requirements",
]

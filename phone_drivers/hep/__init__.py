"""HEPv3 capture source: a UDP listener feeding SIP messages to the dialog tracker."""

from phone_drivers.hep.listener import HepListener, HepStats

__all__ = ["HepListener", "HepStats"]

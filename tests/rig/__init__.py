"""The real-traffic test rig: Kamailio as a HEPv3 source, SIPp phones, a UDP HEP collector.

Helpers only (no tests here apart from ``test_rig_smoke.py``). See ``tests/rig/rig.py`` for the
entry point that runs one transfer case end to end and returns the captured HEP packets.
"""

"""The standing fuzz suite's budget and oracles (issue 14).

Budget: `FUZZ_EXAMPLES` inputs per property (default 200, well under a minute
for the whole suite in CI; e.g. 20000 for a long run) and `FUZZ_DEADLINE_MS`
per input (default 2000: generous on a shared 2-core machine; a quadratic path over a 64 KB
input takes tens of seconds, so it still shows).

Oracle "only the typed error": every parser of peer input raises a subclass of
`bridge.errors.BridgeError` or nothing. The classes the parsers raise:

- `bridge.sip.errors.SipParseError` (SIP messages and header values),
- `bridge.hep.decode.HepDecodeError` (HEPv3 packets),
- `bridge.ami.errors.AmiProtocolError`, `AmiMessageTooLarge` (AMI framing),
- `bridge.dialog.errors.DialogInfoError`, `HostileXml` (dialog-info+xml bodies),
- `bridge.untrusted.UntrustedXmlError` (any XML from a peer),
- `bridge.errors.InvalidInput` (desk-phone requests: Yealink, Snom, Poly).

Pipelines that must not raise at all (the HEP tracker, the AMI call tracker, the dialog
subscription answering a NOTIFY) are fed the same inputs with "nothing escapes" as the oracle.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

from hypothesis import HealthCheck, settings

from bridge.errors import BridgeError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
DEADLINE_MS = int(os.environ.get("FUZZ_DEADLINE_MS", "2000"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(milliseconds=DEADLINE_MS),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

T = TypeVar("T")


def typed(call: Callable[[], T]) -> T | BridgeError:
    """`call()`'s value, or the typed error it raised; anything else fails the test."""
    try:
        return call()
    except BridgeError as exc:
        return exc


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """A per-input time bound of our own, for loops over many inputs inside one example."""
    started = time.process_time()
    yield
    spent = time.process_time() - started
    assert spent < seconds, f"one input took {spent:.2f} s of CPU"

"""The SIP-over-HEP source, pure: HEPv3 decoding, SIP dialog tracking per watched phone, and the
transfer detector that turns dialog changes into phone evidence.

The path of one captured message: :func:`bridge.hep.decode.decode_hep` gives the SIP payload,
:class:`bridge.hep.tracker.SipTracker` parses it, drops duplicates (:mod:`.dedup`), follows the
phone's legs (:mod:`.dialogs`, with :mod:`.legs`, :mod:`.refers`, :mod:`.hold`) and asks
:mod:`.detector` for the evidence.
"""

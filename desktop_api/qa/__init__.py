"""`transfer-bridge qa`: SIPp phones against a running Asterisk; the bridge's verdict beside."""

from desktop_api.qa.command import add_parser, main

__all__ = ["add_parser", "main"]

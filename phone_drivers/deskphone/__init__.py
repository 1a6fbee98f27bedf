"""Desk-phone remote control for QA and admins (never used by the agent flow)."""

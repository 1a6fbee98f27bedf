"""Desk-phone event receivers, pure: vendor parsing (Yealink, Poly, Snom) and per-device state."""

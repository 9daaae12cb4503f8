"""Remuxers: media packets in, other container formats out (sans-IO: they return bytes or file actions)."""

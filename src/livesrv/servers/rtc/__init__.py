"""WebRTC: WHEP play and WHIP publish over aiortc (see service.py)."""

"""livesrv: a live-streaming media server compatible with SRS."""

__version__ = "0.1.0"

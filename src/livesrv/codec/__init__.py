"""Sans-IO codecs: bytes in, events out. No sockets, no asyncio, no clock reads in this package."""

"""DVR: recording streams to files (see :mod:`.service`)."""

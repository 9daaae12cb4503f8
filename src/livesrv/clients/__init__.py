"""Outbound clients: livesrv connecting to other servers (forwarding to and pulling from RTMP servers).

They sit beside ``livesrv.servers``, above ``hub`` and ``codec``: they speak a protocol through the sans-IO
codecs and know nothing about the servers, so a forwarder or edge puller can use them from anywhere.
"""

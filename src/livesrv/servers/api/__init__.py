"""The HTTP API (SRS's shapes): routes and envelopes (:mod:`.service`), JSON views (:mod:`.views`), rates
(:mod:`.sampling`), machine figures (:mod:`.system`) and ids (:mod:`.ids`)."""

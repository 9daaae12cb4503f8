"""HLS: the output the hub feeds (:mod:`.output`), its files (:mod:`.files`), the HTTP side that serves them
(:mod:`.service`) and the players it counts (:mod:`.sessions`)."""

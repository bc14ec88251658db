"""A search worker process: who it is and what it may use (:mod:`.process`), how it stops cleanly (:mod:`.signals`)."""

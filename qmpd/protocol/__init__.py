"""QMP on the wire: sessions, transports, listeners and the early greeting."""

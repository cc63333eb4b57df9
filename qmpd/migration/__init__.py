"""Machine state that survives: the state stream (stream.py), what goes into it (state.py), and the
migrate / -incoming / --state-dir plumbing (commands in qmpd.commands.migration)."""

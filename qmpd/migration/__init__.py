"""Machine state that survives: the state stream (stream.py), what goes into it (state.py), and the
migrate / -incoming / --state-dir plumbing (commands in qmpd.commands.migration)."""

#: The file --state-dir keeps in its directory (defined here so that the command line need not load
#: stream.py and hashlib before the greeting).
STATE_FILE = "qmpd.state"

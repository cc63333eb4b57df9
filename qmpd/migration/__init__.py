"""Machine state that survives: the state stream (stream.py), the orchestration of what goes into it
(state.py collects every owner's section, qmpd.vmstate; description.py checks them all before anything
is applied), and migrate / -incoming / --state-dir (migrator.py, built by the daemon; the commands in
qmpd.commands.migration reach it through their context)."""

#: The file --state-dir keeps in its directory (defined here so that the command line need not load
#: stream.py and hashlib before the greeting).
STATE_FILE = "qmpd.state"

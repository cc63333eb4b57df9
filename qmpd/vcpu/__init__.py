"""vCPU execution: the only place where host threads meet the event loop."""

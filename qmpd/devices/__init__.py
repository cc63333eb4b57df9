"""Emulated devices: each owns its state and its register interface."""

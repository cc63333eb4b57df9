"""The bundled default firmware image (built from examples/firmware by `make firmware`)."""

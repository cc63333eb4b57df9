"""x86 CPU models, feature flags and CPU objects."""

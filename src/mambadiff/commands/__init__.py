"""CLI command implementations (thin wrappers over the library)."""

"""symmetry (under construction)."""

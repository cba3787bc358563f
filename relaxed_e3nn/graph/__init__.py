"""graph (under construction)."""

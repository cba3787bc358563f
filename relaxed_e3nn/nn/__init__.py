"""nn (under construction)."""

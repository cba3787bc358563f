"""discrete (under construction)."""

"""models (under construction)."""

"""groups (under construction)."""

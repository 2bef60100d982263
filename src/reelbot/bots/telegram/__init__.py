"""bots telegram package."""

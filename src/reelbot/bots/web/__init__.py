"""bots web package."""

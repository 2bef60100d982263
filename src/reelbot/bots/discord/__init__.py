"""bots discord package."""

"""The web chat: a third adapter on localhost that speaks the same commands as the chat bots."""

"""The Discord adapter: slash commands, buttons and result delivery over discord.py."""

import warnings

with warnings.catch_warnings():
    # discord.py imports the standard library's audioop for voice, which reelbot never uses;
    # on 3.11/3.12 that warns of its removal in 3.13, and test runs turn warnings into errors.
    warnings.filterwarnings(
        "ignore", message="'audioop' is deprecated", category=DeprecationWarning
    )
    import discord  # noqa: F401

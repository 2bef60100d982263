"""The Telegram adapter: python-telegram-bot handlers, live status messages and result delivery."""

"""The one page of the web chat: ``static/page.html``, its CSS and JavaScript inline, no build."""

from __future__ import annotations

import html
from functools import cache
from importlib.resources import files

__all__ = ["render_page"]


@cache
def _page() -> str:
    return files(__package__).joinpath("static/page.html").read_text(encoding="utf-8")


def render_page(set_name: str) -> str:
    """The chat page, naming the model set it runs."""
    return _page().replace("__SET__", html.escape(set_name))

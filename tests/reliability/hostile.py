"""What the hostile-input tests share: text strategies and the check that nothing pings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

HOSTILE_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=80),
    st.sampled_from(
        [
            "<b>bold</b> <a href='javascript:alert(1)'>x</a> &amp; &lt;",
            "**bold** __u__ ~~s~~ `code` ```block``` ||spoiler|| [link](https://evil.example)",
            "@everyone @here <@123456789012345678> <@&987654321098765432>",
            "--seed 99999999999999999999999999 --steps 1e309 --ar 1:0 --duration nan",
            "\u202etxt.exe \u200b\u200d\ufeff \x00\x07\x1b[31m",
        ]
    ),
)
"""Unicode, control and format characters, markup of both platforms, mentions, absurd flags."""


def assert_no_pings(calls: Iterable[Any]) -> None:
    """No Discord call whose content holds a mass or role mention lets it ping."""
    for call in calls:
        body = call.json if isinstance(call.json, dict) else {}
        data = body.get("data", body) if isinstance(body.get("data"), dict) else body
        content = str(data.get("content") or "")
        if re.search(r"@(everyone|here)|<@&", content):
            mentions = data.get("allowed_mentions")
            assert mentions is not None, (call.method, call.path, content[:80])
            assert "everyone" not in mentions.get("parse", []), mentions
            assert "roles" not in mentions.get("parse", []) and not mentions.get("roles")

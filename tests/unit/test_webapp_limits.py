"""The web app's longest /delay must stay under HAProxy's `timeout server`, or the slowest
requests it accepts would reach clients as 504s."""

from __future__ import annotations

import re
from pathlib import Path

from layerkit.agent.webapp import MAX_DELAY_MS

HAPROXY = Path(__file__).resolve().parents[2] / "images" / "haproxy"


def test_the_longest_delay_is_served_before_haproxy_gives_up() -> None:
    for name in ("haproxy.cfg.j2", "haproxy.cfg"):
        found = re.search(r"^\s*timeout server (\d+)s$", (HAPROXY / name).read_text(), re.M)
        assert found, name
        assert int(found.group(1)) > MAX_DELAY_MS / 1000 + 1, name

"""A cloud's text made safe to quote in an error (adapters/cloud_text.py): what every
provider's failed-deploy message quotes of a container's log, an event or a cloud's message."""

from __future__ import annotations

from adapters.cloud_text import log_tail, safe_line


def test_a_log_line_is_made_safe_to_quote() -> None:
    assert safe_line("a\tb\n\x1b[1;32mok\x1b[0m \x1b]0;title\x07done\u2028\u202e!") == (
        "a b ok done !"
    )
    assert safe_line("Bearer use: Authorization: Bearer abc.def") == (
        "Bearer use: Authorization: [redacted]"
    )
    assert safe_line("x-acs-security-token:sts-1 AccessKeySecret = s3cr3t;") == (
        "x-acs-security-token:[redacted] AccessKeySecret = [redacted];"
    )
    assert safe_line("t0k3n-value-123 inside", secrets=["t0k3n-value-123"]) == "[redacted] inside"
    assert safe_line("y" * 500) == "y" * 199 + "…"
    lines = [f"line {i}" for i in range(400)]
    tail = log_tail(lines, limit=60)
    assert tail.endswith("line 399") and len(tail) <= 60 and "line 390" not in tail
    assert log_tail(["z" * 300], limit=50) == "z" * 49 + "…"
    assert log_tail(["", "  ", "\x07"]) == ""

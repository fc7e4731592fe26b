"""The syslog side of HV-3: destinations parsed and bounded, messages RFC 5424."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nfvha.model.settings import Settings
from nfvha.util.syslog import MAX_MESSAGE_BYTES, format_message, parse_destination


@pytest.mark.parametrize("text", ["syslog://127.0.0.1", "udp://127.0.0.1:514",
                                  "syslog://host.example:514", "syslog://127.0.0.1:0",
                                  "syslog://127.0.0.1:514/x", "syslog://[::1]:514"])
def test_bad_destinations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_destination(text)


@pytest.mark.req("HV-3")
def test_destinations_are_configuration_checked_at_load() -> None:
    ok = Settings(host_report_destinations=["syslog://198.18.0.1:514",
                                            "syslog://127.0.0.1:5514"])
    assert len(ok.host_report_destinations) == 2
    with pytest.raises(ValidationError, match="only loopback"):
        Settings(host_report_destinations=["syslog://192.0.2.1:514"])
    with pytest.raises(ValidationError, match="syslog://IP:PORT"):
        Settings(host_report_destinations=["tcp://127.0.0.1:514"])
    with pytest.raises(ValidationError):
        Settings(host_report_destinations=[f"syslog://127.0.0.1:{p}" for p in range(1, 10)])


def test_messages_are_rfc5424_escaped_and_bounded() -> None:
    msg = format_message(severity="err", hostname="h 1", app="nfvha-hostd", procid=42,
                         msgid="agent-failed", fields={"desc": 'a "b" ]c\\'}, text="x" * 5000,
                         now=0.5)
    assert msg.startswith(b'<27>1 1970-01-01T00:00:00.500000Z h1 nfvha-hostd 42 agent-failed'
                          b' [nfvha@32473 desc="a \\"b\\" \\]c\\\\"] \xef\xbb\xbfxxx')
    assert len(msg) == MAX_MESSAGE_BYTES

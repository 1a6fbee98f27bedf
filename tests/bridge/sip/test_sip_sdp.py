"""SDP media direction for hold and resume."""

from __future__ import annotations

import pytest

from bridge.sip import SdpDirection, parse_message, sdp_direction

AUDIO = "m=audio 4000 RTP/AVP 0\r\n"


@pytest.mark.parametrize(
    ("sdp", "direction"),
    [
        ("v=0\r\nc=IN IP4 10.0.0.1\r\n" + AUDIO, SdpDirection.SENDRECV),
        ("v=0\r\na=sendonly\r\n" + AUDIO, SdpDirection.SENDONLY),
        ("v=0\r\na=recvonly\r\n" + AUDIO + "a=sendrecv\r\n", SdpDirection.SENDRECV),
        ("v=0\r\n" + AUDIO + "a=inactive\r\n", SdpDirection.INACTIVE),
        ("v=0\r\n" + AUDIO + "a=recvonly \r\n", SdpDirection.RECVONLY),
        ("v=0\nc=IN IP4 0.0.0.0\n" + AUDIO.replace("\r", ""), SdpDirection.INACTIVE),
        ("v=0\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\n" + AUDIO, SdpDirection.SENDONLY),
        ("v=0\r\nc=IN IP4 0.0.0.0\r\n" + AUDIO + "c=IN IP4 10.0.0.1\r\n", SdpDirection.SENDRECV),
        ("v=0\r\nm=audio 0 RTP/AVP 0\r\n", SdpDirection.INACTIVE),
        ("v=0\r\nm=video 5000 RTP/AVP 96\r\na=sendonly\r\n" + AUDIO, SdpDirection.SENDRECV),
        (
            "v=0\r\nm=audio 0 RTP/AVP 0\r\nm=audio 5000/2 RTP/AVP 0\r\na=inactive\r\n",
            SdpDirection.INACTIVE,
        ),
        ("v=0\r\nm=video 5000 RTP/AVP 96\r\na=sendonly\r\n", SdpDirection.SENDONLY),
        ("v=0\r\na=inactive\r\n", SdpDirection.INACTIVE),
        ("", SdpDirection.SENDRECV),
        ("a=sendonly", SdpDirection.SENDONLY),
        ("v=0\r\n" + AUDIO + "a=sendonlyx\r\n", SdpDirection.SENDRECV),
    ],
)
def test_direction(sdp: str, direction: SdpDirection) -> None:
    assert sdp_direction(sdp.encode()) is direction


def test_is_hold() -> None:
    assert SdpDirection.SENDONLY.is_hold and SdpDirection.INACTIVE.is_hold
    assert not SdpDirection.SENDRECV.is_hold and not SdpDirection.RECVONLY.is_hold
    assert str(SdpDirection.SENDONLY) == "sendonly"


def test_message_without_sdp() -> None:
    head = (
        b"INVITE sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
    )
    assert parse_message(head + b"\r\n").sdp_direction() is None
    sniffed = parse_message(head + b"\r\nv=0\r\na=sendonly\r\n" + AUDIO.encode())
    assert sniffed.sdp_direction() is SdpDirection.SENDONLY
    typed = head + b"Content-Type: Application/SDP; charset=x\r\n\r\nv=0\r\na=inactive\r\n"
    assert parse_message(typed).sdp_direction() is SdpDirection.INACTIVE
    other = head + b"Content-Type: multipart/mixed;boundary=x\r\n\r\nv=0\r\n"
    assert parse_message(other).sdp_direction() is None

"""The AT line engine over a real pty: answers apart from URCs, errors, noise, timeouts, loss.

The far end is a scripted peer on the pty's master side: it reads each command line and
writes back exactly the bytes a test gives for it, so every corner of the framing (URCs
between information lines, garbage, late answers, a vanished device) is reproduced on a real
terminal device, the way a modem behind a USB serial port behaves.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.radio.at import (
    AtChannel,
    AtCommandError,
    AtIOError,
    AtTimeout,
    Transcript,
    Urc,
    split_params,
)

Script = Callable[[str], bytes | None]


class Peer:
    """The device end of a pty: answers each command line with ``script(line)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open so the pty lives until the peer closes
        self.received: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            # poll, not a blocking read: closing an fd does not wake a thread blocked on it
            try:
                if not select.select([self.master], [], [], 0.05)[0]:
                    continue
                chunk = os.read(self.master, 1024)
            except (OSError, ValueError):
                return
            buffer += chunk
            while b"\r" in buffer:
                raw, buffer = buffer.split(b"\r", 1)
                line = raw.decode(errors="replace")
                self.received.append(line)
                answer = self.script(line)
                if answer:
                    self.send(answer)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def hang_up(self) -> None:
        """The device vanishes: both ends of the pty are closed on its side."""
        if self._stop.is_set():
            return  # closed already: the fd numbers may belong to someone else by now
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def ok(*lines: str) -> bytes:
    return b"".join(b"\r\n" + line.encode() + b"\r\n" for line in (*lines, "OK"))


@pytest.fixture
def make_channel(tmp_path: Path) -> Iterator[Callable[..., tuple[AtChannel, Peer, list[Urc]]]]:
    made: list[tuple[AtChannel, Peer]] = []

    def make(script: Script, **kwargs: object) -> tuple[AtChannel, Peer, list[Urc]]:
        peer = Peer(script)
        urcs: list[Urc] = []
        channel = AtChannel(
            peer.path,
            device="modem1",
            transcript=Transcript(tmp_path / "modem1.at.log", "modem1 test"),
            urc_names={"+CEREG", "+CTXG", "+CTSDSR"},
            urc_extra_lines={"+CTSDSR": 1},
            on_urc=urcs.append,
            timeout_s=2.0,
            **kwargs,  # type: ignore[arg-type]
        )
        channel.open()
        made.append((channel, peer))
        return channel, peer, urcs

    yield make
    for channel, peer in made:
        channel.close()
        peer.hang_up()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_answer_lines_and_final_result(make_channel: Callable[..., tuple]) -> None:
    answers = {"AT+CGMI": ok("Quectel"), "AT+CSQ": ok("+CSQ: 20,99")}
    channel, peer, _ = make_channel(lambda line: answers.get(line))
    assert channel.command("AT+CGMI").lines == ("Quectel",)
    response = channel.command("AT+CSQ")
    assert response.value("+CSQ") == "20,99" and response.final == "OK"
    assert peer.received == ["AT+CGMI", "AT+CSQ"]


def test_echo_is_not_taken_for_an_answer(make_channel: Callable[..., tuple]) -> None:
    channel, _, _ = make_channel(lambda line: line.encode() + b"\r" + ok("+CSQ: 5,99"))
    assert channel.command("AT+CSQ").lines == ("+CSQ: 5,99",)


def test_urcs_between_answer_lines_go_to_the_handler(make_channel: Callable[..., tuple]) -> None:
    def script(line: str) -> bytes:
        return (
            b'\r\n+CGDCONT: 1,"IP","mcx"\r\n'
            b'\r\n+CEREG: 5,"00A1","0000A101",7\r\n'
            b"\r\n+CTSDSR: 12,1001,0,2002,0,32\r\n0102ABCD\r\n"
            b'\r\n+CGDCONT: 2,"IP","ims"\r\n\r\nOK\r\n'
        )

    channel, _, urcs = make_channel(script)
    response = channel.command("AT+CGDCONT?")
    assert response.values("+CGDCONT") == ['1,"IP","mcx"', '2,"IP","ims"']
    assert wait_for(lambda: len(urcs) == 2)
    cereg, sds = urcs
    assert (cereg.name, split_params(cereg.text)) == ("+CEREG", ["5", "00A1", "0000A101", "7"])
    assert sds.name == "+CTSDSR" and sds.extra == ("0102ABCD",)
    assert cereg.wall <= sds.wall


def test_a_urc_named_like_the_command_is_its_answer(make_channel: Callable[..., tuple]) -> None:
    channel, peer, urcs = make_channel(lambda line: ok("+CEREG: 2,1"))
    assert channel.command("AT+CEREG?").value("+CEREG") == "2,1"
    peer.send(b"\r\n+CEREG: 2\r\n")  # between commands: a URC
    assert wait_for(lambda: [u.text for u in urcs] == ["2"])


@pytest.mark.parametrize(
    ("final", "code", "reason"),
    [
        ("+CME ERROR: 16", 16, "incorrect password"),
        ("+CME ERROR: 999", 999, "unknown error code"),
        ("+CME ERROR: SIM PIN required", None, "SIM PIN required"),
        ("ERROR", None, "the device gave no reason"),
    ],
)
def test_final_errors_are_decoded(
    make_channel: Callable[..., tuple], final: str, code: int | None, reason: str
) -> None:
    channel, _, _ = make_channel(lambda line: f"\r\n{final}\r\n".encode())
    with pytest.raises(AtCommandError) as caught:
        channel.command("AT+CGACT=1,1")
    assert (caught.value.code, caught.value.reason, caught.value.final) == (code, reason, final)
    assert "modem1" in str(caught.value) and "AT+CGACT=1,1" in str(caught.value)


def test_device_specific_error_table(make_channel: Callable[..., tuple]) -> None:
    channel, _, _ = make_channel(
        lambda line: b"\r\n+CME ERROR: 30\r\n", error_names={30: "MS out of service"}
    )
    with pytest.raises(AtCommandError, match="MS out of service"):
        channel.command("AT+CTXD=1,1")


def test_garbled_lines_are_counted_and_skipped(make_channel: Callable[..., tuple]) -> None:
    noise = b"\r\n\xff\xfe\x81garbage\x00\r\n"
    channel, peer, _ = make_channel(lambda line: noise + ok("+CSQ: 9,99"))
    assert channel.command("AT+CSQ").lines == ("+CSQ: 9,99",)
    peer.send(b"\r\nRING-ish noise\r\n")
    assert wait_for(lambda: channel.counts["unexpected"] == 1)
    assert channel.counts["garbled"] == 1
    log = channel.transcript.path.read_text()  # type: ignore[union-attr]
    assert "? garbled" in log and "? RING-ish noise" in log


def test_a_timeout_then_a_late_answer_does_not_shift_answers(
    make_channel: Callable[..., tuple],
) -> None:
    late: list[bytes] = []

    def script(line: str) -> bytes | None:
        if line == "AT+COPS=?":
            late.append(ok('+COPS: (2,"EUCCS A","EUCCS-A","00101",7)'))
            return None  # the scan takes longer than the timeout
        if line == "AT":
            return (late.pop() if late else b"") + ok()
        return ok(f"+CSQ: {len(line)},99")

    channel, _, _ = make_channel(script)
    with pytest.raises(AtTimeout, match=r"modem1.*no answer to 'AT\+COPS=\?' within 0.3 s"):
        channel.command("AT+COPS=?", timeout_s=0.3)
    assert channel.command("AT+CSQ").lines == ("+CSQ: 6,99",)
    assert channel.counts["timeouts"] == 1


def test_lost_device_fails_the_waiting_command_and_reports_once(
    make_channel: Callable[..., tuple],
) -> None:
    lost: list[str] = []
    channel, peer, _ = make_channel(lambda line: None, on_lost=lost.append)
    threading.Timer(0.2, peer.hang_up).start()
    started = time.monotonic()
    with pytest.raises(AtIOError, match=r"modem1.*connection lost"):
        channel.command("AT+CSQ", timeout_s=5.0)
    assert time.monotonic() - started < 4.0  # not the whole timeout
    assert wait_for(lambda: len(lost) == 1)
    with pytest.raises(AtIOError, match="not connected"):
        channel.command("AT")
    assert len(lost) == 1 and not channel.is_open


def test_open_failure_names_the_device(tmp_path: Path) -> None:
    channel = AtChannel(str(tmp_path / "no-such-tty"), device="modem9", transcript=Transcript(None))
    with pytest.raises(AtIOError, match="modem9: cannot open"):
        channel.open()


def test_user_data_follows_the_command_with_ctrl_z(make_channel: Callable[..., tuple]) -> None:
    seen: list[bytes] = []

    def script(line: str) -> bytes | None:
        seen.append(line.encode())
        return None if line.startswith("AT+CMGS") else ok()

    channel, peer, _ = make_channel(script)
    threading.Timer(0.2, lambda: peer.send(ok("+CMGS: 0,4,1"))).start()
    response = channel.command("AT+CMGS=2002,32", data="0102ABCD")
    assert response.value("+CMGS") == "0,4,1"
    assert seen[0] == b"AT+CMGS=2002,32"
    assert wait_for(lambda: len(seen) >= 1)


def test_a_mangled_urc_payload_never_swallows_an_answer(
    make_channel: Callable[..., tuple],
) -> None:
    def script(line: str) -> bytes:
        if line == "AT+CSQ":  # the payload line is lost: the OK must still end the command
            return b"\r\n+CTSDSR: 12,1001,0,2002,0,32\r\n" + ok("+CSQ: 7,99")
        return b"\r\n+CTSDSR: 12,1001,0,2002,0,32\r\n\xff\xfe\r\n" + ok()

    channel, _, urcs = make_channel(script)
    assert channel.command("AT").final == "OK"
    assert wait_for(lambda: len(urcs) == 1) and urcs[0].extra == ("GARBLED",)
    response = channel.command("AT+CSQ")
    assert response.final == "OK" and response.sent_mono <= time.monotonic()
    assert wait_for(lambda: len(urcs) == 2)
    assert urcs[1].extra == ("+CSQ: 7,99",)  # taken as the payload it was announced as


def test_pins_stay_out_of_transcripts_and_messages(make_channel: Callable[..., tuple]) -> None:
    channel, _, _ = make_channel(lambda line: line.encode() + b"\r\n+CME ERROR: 16\r\n")
    with pytest.raises(AtCommandError) as caught:
        channel.command('AT+CPIN="4321"')
    log = channel.transcript.path.read_text()  # type: ignore[union-attr]
    assert "4321" not in log and "4321" not in str(caught.value)
    assert "AT+CPIN=<redacted>" in log


def test_close_ends_a_waiting_command_at_once(make_channel: Callable[..., tuple]) -> None:
    channel, _, _ = make_channel(lambda line: None)
    threading.Timer(0.2, channel.close).start()
    started = time.monotonic()
    with pytest.raises(AtIOError):
        channel.command("AT+COPS=?", timeout_s=10.0)
    assert time.monotonic() - started < 5.0 and channel.counts["timeouts"] == 0


def test_split_params_respects_quotes() -> None:
    assert split_params('1,"a,b",,"x"') == ["1", "a,b", "", "x"]
    assert split_params("") == [""]

"""Real SIP phones for the Asterisk rig: a pjsua2 process holding one or more phones.

Run as ``python -m tests.rig.softphone --pbx 127.0.0.1:5070 --phone 1001=5081 [--phone ...]
[--log FILE]``. This pjsua2 build holds at most 4 calls per process (PJSUA_MAX_CALLS; more are
refused with 486 "too many calls"), so ``tests/rig/phones.py`` runs one process per phone.
One pjsua2 Endpoint; per phone one UDP transport on 127.0.0.1:PORT and one account (no
registrar: Asterisk reaches each phone through the static contact in pjsip.conf and recognises
it by its source port). Everything runs on the main thread (``threadCnt = 0``,
``mainThreadOnly``, a loop of ``libHandleEvents``).

Control: one JSON object a line on stdin, ``{"id": 7, "cmd": "call", "phone": "2000",
"to": "1001"}``; every command is answered by ``{"ev": "reply", "id": 7, "ok": true,
"result": {...}}`` or ``{"ev": "reply", "id": 7, "ok": false, "error": "..."}``. Commands:

- ``call(phone, to)`` -> ``{"ref", "call_id"}``: INVITE ``sip:<to>@<pbx>``; call refs look like
  ``1001-c3`` (the phone, then a number unique in the process);
- ``answer(phone, ref, code=200)``; ``hangup(phone, ref, code=0)`` -> ``{"already_ended"}``
  (true when the far end had ended the call first);
- ``hold(phone, ref)``, ``unhold(phone, ref)`` (re-INVITE sendonly / sendrecv);
- ``blind_transfer(phone, ref, target, hangup_on_success=true)`` (REFER ``sip:<target>@<pbx>``;
  like a desk phone, the phone hangs the call up once the final NOTIFY says 2xx: Asterisk 22
  itself does not BYE the transferor);
- ``attended_transfer(phone, ref, consult_ref, hangup_on_success=true)`` (REFER with Replaces
  naming the consult call);
- ``answer_then_transfer(phone, ref, target)``: 200 OK and the REFER in the same instant (the
  race docs/rig.md describes);
- ``behaviour(phone, mode, delay_ms=0, code=200)``: what the phone does with incoming calls:
  ``manual`` (default: 180 Ringing, then wait for ``answer``), ``auto`` (180, then ``code``
  after delay_ms: 200 answers, 486/603 rejects after ringing), ``busy`` (486 Busy Here at once);
- ``calls()`` -> every call the process knows; ``quit()``.

Reports (stdout, one JSON object a line, each with ``"t"`` = wall-clock time): ``ready``
(phones and ports); ``call_state`` on every call state change (``phone``, ``ref``, ``dir``
in/out, ``state`` CALLING/INCOMING/EARLY/CONNECTING/CONFIRMED/DISCONNECTED, ``remote``,
``call_id``, ``code``, ``reason``); ``media`` (``status`` active/local_hold/remote_hold/none);
``xfer_status`` (``code``, ``reason``, ``final``) from the NOTIFYs of a transfer;
``xfer_request`` and ``replace_request`` if the PBX ever REFERs a phone or sends Replaces;
``answered`` (``phone``, ``ref``, ``code``) the moment the phone sends a final answer (2xx or a
rejection) to an incoming call, so a test knows when a person answered or refused;
``log`` for anything unexpected. pjsua2's own log goes to ``--log`` (never to stdout).

The process ends when stdin closes (or on ``quit`` / SIGTERM): it hangs up what is left, lets
the BYEs out, and destroys the library so no thread or socket outlives it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

STATES = {
    pj.PJSIP_INV_STATE_NULL: "NULL",
    pj.PJSIP_INV_STATE_CALLING: "CALLING",
    pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}
MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}
MODES = ("manual", "auto", "busy")
PJSIP_ESESSIONTERMINATED = 171140  # pjsip error: INVITE session already terminated


class CommandError(Exception):
    """A command that cannot be carried out (unknown phone or call, bad arguments)."""


_OUT = sys.stdout


def emit(ev: str, **fields: Any) -> None:
    """Write one report line to the report stream (the original stdout)."""
    fields = {"ev": ev, "t": round(time.time(), 6), **fields}
    _OUT.write(json.dumps(fields, sort_keys=False) + "\n")
    _OUT.flush()


def keep_stdout_for_reports() -> None:
    """Reports keep the original stdout; file descriptor 1 becomes stderr, so whatever the
    library prints itself (pjlib logs before ``libInit``) never mixes with the reports."""
    global _OUT
    _OUT = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)


class RigCall(pj.Call):  # type: ignore[misc]
    """A call of one phone. Attribute names must never shadow pj.Call methods (e.g. ``xfer``)."""

    def __init__(self, rig: Rig, phone: Phone, ref: str, direction: str, call_id: int) -> None:
        super().__init__(phone.account, call_id)
        self.rig = rig
        self.phone = phone
        self.ref = ref
        self.direction = direction
        self.sip_call_id = ""
        self.remote = ""
        self.state = "NULL"
        self.code = 0
        # Like a desk phone (and pjsua's own app): end this call once a transfer made on it
        # reports a final 2xx. Off for a phone that leaves it to the far end.
        self.hangup_on_transfer_success = False

    def refresh(self) -> None:
        try:
            info = self.getInfo()
        except pj.Error:
            return
        self.sip_call_id = info.callIdString or self.sip_call_id
        self.remote = info.remoteUri or self.remote
        self.state = STATES.get(info.state, str(info.state))
        self.code = int(info.lastStatusCode)
        self._reason = info.lastReason

    def describe(self) -> dict[str, Any]:
        return {
            "phone": self.phone.ext,
            "ref": self.ref,
            "dir": self.direction,
            "state": self.state,
            "remote": self.remote,
            "call_id": self.sip_call_id,
            "code": self.code,
        }

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self.refresh()
        emit("call_state", **self.describe(), reason=getattr(self, "_reason", ""))
        if self.state == "DISCONNECTED":
            self.rig.forget_timers(self.ref)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        try:
            info = self.getInfo()
        except pj.Error:
            return
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO:
                status = MEDIA_STATUS.get(media.status, str(media.status))
                emit("media", phone=self.phone.ext, ref=self.ref, status=status)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        emit(
            "xfer_status",
            phone=self.phone.ext,
            ref=self.ref,
            code=int(prm.statusCode),
            reason=prm.reason,
            final=bool(prm.finalNotify),
        )
        if prm.finalNotify and 200 <= prm.statusCode < 300 and self.hangup_on_transfer_success:
            self.hangup_on_transfer_success = False
            self.rig.after(0.0, self.ref, self._hangup_after_transfer)

    def _hangup_after_transfer(self) -> None:
        if self.state not in ("DISCONNECTED", "NULL"):
            emit("log", phone=self.phone.ext, ref=self.ref, message="hangup after transfer")
            try:
                self.hangup(pj.CallOpParam(True))
            except pj.Error as exc:
                emit("log", phone=self.phone.ext, ref=self.ref, message=f"hangup: {exc.info()}")

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        emit("xfer_request", phone=self.phone.ext, ref=self.ref, dst=prm.dstUri)

    def onCallReplaceRequest(self, prm: pj.OnCallReplaceRequestParam) -> None:
        emit("replace_request", phone=self.phone.ext, ref=self.ref)


class RigAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, rig: Rig, phone: Phone) -> None:
        super().__init__()
        self.rig = rig
        self.phone = phone

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.rig.incoming(self.phone, prm.callId)


class Phone:
    def __init__(self, ext: str, port: int) -> None:
        self.ext = ext
        self.port = port
        self.mode = "manual"
        self.delay_ms = 0
        self.code = 200  # what ``auto`` answers with after delay_ms
        self.account: RigAccount


class Rig:
    """The endpoint, the phones, their calls and the command loop."""

    def __init__(self, pbx: tuple[str, int], phones: dict[str, int], log: str | None) -> None:
        self.pbx = pbx
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = "transfer-bridge-rig-pjsua2"
        cfg.uaConfig.maxCalls = 4  # the most this build allows (PJSUA_MAX_CALLS)
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.noVad = True
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.level = 5 if log else 0
        if log:
            cfg.logConfig.filename = log
        self.ep.libInit(cfg)
        self.ep.audDevManager().setNullDev()
        self.phones: dict[str, Phone] = {}
        for ext, port in phones.items():
            phone = Phone(ext, port)
            tcfg = pj.TransportConfig()
            tcfg.port = port
            tcfg.boundAddress = "127.0.0.1"
            tid = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
            acfg = pj.AccountConfig()
            acfg.idUri = f"sip:{ext}@127.0.0.1:{port}"
            acfg.sipConfig.transportId = tid
            acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
            acfg.natConfig.sdpNatRewriteUse = False
            acfg.natConfig.viaRewriteUse = False
            acfg.natConfig.contactRewriteUse = False
            phone.account = RigAccount(self, phone)
            phone.account.create(acfg)
            self.phones[ext] = phone
        self.ep.libStart()
        self.calls: dict[str, RigCall] = {}
        self.next_ref = 1
        self.timers: list[tuple[float, str, Callable[[], None]]] = []
        self.stop = False

    # ---- calls
    def new_ref(self, phone: Phone) -> str:
        ref = f"{phone.ext}-c{self.next_ref}"
        self.next_ref += 1
        return ref

    def incoming(self, phone: Phone, call_id: int) -> None:
        call = RigCall(self, phone, self.new_ref(phone), "in", call_id)
        self.calls[call.ref] = call
        call.refresh()
        emit("call_state", **call.describe(), reason="incoming")
        if phone.mode == "busy":
            self._answer(call, 486)
            return
        self._answer(call, 180)
        if phone.mode == "auto":
            ref, code = call.ref, phone.code
            self.after(phone.delay_ms / 1000.0, ref, lambda: self._auto(ref, code))

    def after(self, delay: float, ref: str, action: Callable[[], None]) -> None:
        """Run ``action`` from the main loop ``delay`` s from now (dropped if ``ref`` ends)."""
        self.timers.append((time.monotonic() + delay, ref, action))

    def _auto(self, ref: str, code: int) -> None:
        call = self.calls.get(ref)
        if call is not None and call.state in ("INCOMING", "EARLY"):
            try:
                self._answer(call, code)
            except pj.Error as exc:
                emit("log", phone=call.phone.ext, ref=ref, message=f"auto answer: {exc.info()}")

    def forget_timers(self, ref: str) -> None:
        self.timers = [t for t in self.timers if t[1] != ref]

    def _answer(self, call: RigCall, code: int) -> None:
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        if code >= 200:
            # before the call: a test compares this time with when evidence claimed success
            emit("answered", phone=call.phone.ext, ref=call.ref, code=code)
        call.answer(prm)

    def call_of(self, cmd: dict[str, Any]) -> RigCall:
        ref = cmd.get("ref")
        call = self.calls.get(str(ref))
        if call is None:
            raise CommandError(f"no call {ref!r}")
        phone = cmd.get("phone")
        if phone is not None and call.phone.ext != str(phone):
            raise CommandError(f"call {ref} belongs to {call.phone.ext}, not {phone}")
        return call

    def phone_of(self, cmd: dict[str, Any]) -> Phone:
        phone = self.phones.get(str(cmd.get("phone")))
        if phone is None:
            raise CommandError(f"no phone {cmd.get('phone')!r} (have {sorted(self.phones)})")
        return phone

    def uri(self, ext: str) -> str:
        return f"sip:{ext}@{self.pbx[0]}:{self.pbx[1]}"

    # ---- commands
    def run_command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "call":
            phone = self.phone_of(cmd)
            call = RigCall(self, phone, self.new_ref(phone), "out", pj.PJSUA_INVALID_ID)
            self.calls[call.ref] = call
            call.makeCall(self.uri(str(cmd["to"])), pj.CallOpParam(True))
            call.refresh()
            return {"ref": call.ref, "call_id": call.sip_call_id}
        if name == "answer":
            call = self.call_of(cmd)
            self._answer(call, int(cmd.get("code", 200)))
            return {"ref": call.ref}
        if name == "hangup":
            call = self.call_of(cmd)
            prm = pj.CallOpParam(True)
            prm.statusCode = int(cmd.get("code", 0))
            try:
                call.hangup(prm)
            except pj.Error as exc:
                # The far end ended it meanwhile (a race a test cannot avoid): not an error.
                if exc.status != PJSIP_ESESSIONTERMINATED:
                    raise
                return {"ref": call.ref, "already_ended": True}
            return {"ref": call.ref, "already_ended": False}
        if name == "hold":
            call = self.call_of(cmd)
            call.setHold(pj.CallOpParam(True))
            return {"ref": call.ref}
        if name == "unhold":
            call = self.call_of(cmd)
            prm = pj.CallOpParam(True)
            prm.opt.flag = pj.PJSUA_CALL_UNHOLD
            call.reinvite(prm)
            return {"ref": call.ref}
        if name == "blind_transfer":
            call = self.call_of(cmd)
            call.hangup_on_transfer_success = bool(cmd.get("hangup_on_success", True))
            call.xfer(self.uri(str(cmd["target"])), pj.CallOpParam(True))
            return {"ref": call.ref}
        if name == "answer_then_transfer":
            call = self.call_of(cmd)
            self._answer(call, 200)
            call.hangup_on_transfer_success = bool(cmd.get("hangup_on_success", True))
            call.xfer(self.uri(str(cmd["target"])), pj.CallOpParam(True))
            return {"ref": call.ref}
        if name == "attended_transfer":
            call = self.call_of(cmd)
            consult = self.calls.get(str(cmd.get("consult_ref")))
            if consult is None:
                raise CommandError(f"no consult call {cmd.get('consult_ref')!r}")
            call.hangup_on_transfer_success = bool(cmd.get("hangup_on_success", True))
            call.xferReplaces(consult, pj.CallOpParam(True))
            return {"ref": call.ref, "consult_ref": consult.ref}
        if name == "behaviour":
            phone = self.phone_of(cmd)
            mode = str(cmd.get("mode", "manual"))
            if mode not in MODES:
                raise CommandError(f"mode must be one of {MODES}, not {mode!r}")
            phone.mode = mode
            phone.delay_ms = int(cmd.get("delay_ms", 0))
            phone.code = int(cmd.get("code", 200))
            return {
                "phone": phone.ext,
                "mode": mode,
                "delay_ms": phone.delay_ms,
                "code": phone.code,
            }
        if name == "calls":
            for call in self.calls.values():
                call.refresh()
            return {"calls": [c.describe() for c in self.calls.values()]}
        if name == "quit":
            self.stop = True
            return {}
        raise CommandError(f"unknown command {name!r}")

    def handle_line(self, line: str) -> None:
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise CommandError("a command is a JSON object")
        except (ValueError, CommandError) as exc:
            emit("reply", id=None, ok=False, error=f"bad command line: {exc}")
            return
        try:
            result = self.run_command(cmd)
        except CommandError as exc:
            emit("reply", id=cmd.get("id"), ok=False, error=str(exc))
        except pj.Error as exc:
            emit("reply", id=cmd.get("id"), ok=False, error=f"pjsua2: {exc.info()}")
        except (KeyError, TypeError, ValueError) as exc:
            emit("reply", id=cmd.get("id"), ok=False, error=f"bad arguments: {exc!r}")
        else:
            emit("reply", id=cmd.get("id"), ok=True, result=result)

    # ---- main loop
    def run(self) -> None:
        emit("ready", phones={p.ext: p.port for p in self.phones.values()}, pid=os.getpid())
        buf = b""
        fd = sys.stdin.fileno()
        while not self.stop:
            self.ep.libHandleEvents(5)
            now = time.monotonic()
            due = [t for t in self.timers if t[0] <= now]
            if due:
                self.timers = [t for t in self.timers if t[0] > now]
                for _, _, action in due:
                    action()
            readable, _, _ = select.select([fd], [], [], 0)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    self.handle_line(line.decode("utf-8", "replace"))
        self.shutdown()

    def shutdown(self) -> None:
        """Hang up what is left, let the BYEs go out, destroy the library."""
        with contextlib.suppress(pj.Error):
            self.ep.hangupAllCalls()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            self.ep.libHandleEvents(10)
            if all(c.state in ("DISCONNECTED", "NULL") for c in self.calls.values()):
                break
        self.calls.clear()
        for phone in self.phones.values():
            with contextlib.suppress(pj.Error):
                phone.account.shutdown()
        self.ep.libHandleEvents(10)
        self.ep.libDestroy()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pjsua2 phones driven by JSON lines")
    parser.add_argument("--pbx", default="127.0.0.1:5070", help="HOST:PORT of Asterisk")
    parser.add_argument(
        "--phone", action="append", default=[], required=True, help="EXT=PORT (repeat)"
    )
    parser.add_argument("--log", help="pjsua2 log file (level 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_stdout_for_reports()
    host, _, port = args.pbx.rpartition(":")
    phones = {}
    for spec in args.phone:
        ext, _, p = spec.partition("=")
        phones[ext] = int(p)
    rig = Rig((host, int(port)), phones, args.log)

    def on_term(signum: int, frame: object) -> None:
        rig.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    rig.run()
    _OUT.flush()
    # Skip the interpreter's teardown: pjsua2 objects collected after libDestroy can crash it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

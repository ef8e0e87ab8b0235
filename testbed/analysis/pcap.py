"""Fast pcap/pcapng reader that turns a capture into bounded chunks of an IPv4 packet table.

The bulk analysis of a soak capture (millions of packets) cannot afford one Python object per
packet, so the file is read in large blocks and the one inherently sequential step, finding where
each record starts, is vectorised too: every offset that looks like a record header (an enhanced
packet block's type and matching trailer; a pcap record's seconds field) is found with one scan of
the block, and the true records are then chained from a known boundary through their lengths, each
link verified (:func:`_follow`); a few records at a time are walked in a Python loop where the
chain breaks (other blocks, the end of a block). Every field is then gathered for all records at
once with numpy indexing on the raw bytes -- about 4-5 M packets/s on the 2-core lab machine,
against 35k for ``tshark -T fields`` (baselines document, section 5). Chunks are the tables of
whole read blocks, merged when small. Supported: pcap in both byte orders with µs or ns timestamps,
pcapng (SHB, IDB with ``if_tsresol``/``if_tsoffset``, EPB, SPB and the obsolete PB; several
sections and interfaces; other blocks are skipped) on Ethernet (with up to two VLAN tags), Linux
cooked SLL/SLL2 and raw IPv4 link types. The table is IPv4 only: other network protocols, non-first
IPv4 fragments, packets whose headers were not captured and unsupported link types are counted in
:class:`CaptureInfo` and skipped. A file cut short (capture killed, disk full) is read up to its
last complete record and reported as ``truncated``; an empty or non-capture file raises
:class:`~testbed.errors.AnalysisError`.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from testbed.errors import AnalysisError

__all__ = [
    "FLAG_MORE_FRAGMENTS",
    "HEAD_BYTES",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_RAW",
    "PACKET_DTYPE",
    "CaptureInfo",
    "CaptureReader",
    "PacketChunk",
    "read_packets",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset(
    {LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL2}
)

#: Bytes of each UDP payload copied into the fixed-width ``head`` column: enough for the RTP
#: fixed header (12) and the probe header (20) without keeping whole packets in memory.
HEAD_BYTES = 32
#: ``flags`` bit: the packet is the first fragment of a fragmented datagram (payload partial).
FLAG_MORE_FRAGMENTS = 1

#: One row per IPv4 packet. ``frame`` is the 1-based packet record number in the file (Wireshark's
#: ``frame.number``); ``iface`` the interface index (pcapng, counted across sections; 0 for pcap);
#: ``sport``/``dport`` are 0 unless TCP or UDP; ``payload_len`` is the UDP payload length claimed
#: by the UDP header (0 for other protocols); ``head`` holds its first ``head_len`` captured bytes,
#: zero-filled after them.
PACKET_DTYPE = np.dtype(
    [
        ("ts_ns", "<i8"),
        ("frame", "<u8"),
        ("src", "<u4"),
        ("dst", "<u4"),
        ("ip_len", "<u2"),
        ("ip_id", "<u2"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("payload_len", "<u2"),
        ("iface", "<u2"),
        ("proto", "u1"),
        ("dscp", "u1"),
        ("flags", "u1"),
        ("head_len", "u1"),
        ("head", "u1", (HEAD_BYTES,)),
    ]
)

PacketArray = npt.NDArray[np.void]
_I64 = npt.NDArray[np.int64]
_U8 = npt.NDArray[np.uint8]
_Bool = npt.NDArray[np.bool_]

_BLOCK_BYTES = 8 << 20
# Chunks are at least this many rows where the capture allows (see _rechunk).
_MIN_CHUNK = 16384
# A record claiming more than this is not a packet but a damaged length field.
_MAX_RECORD = 16 << 20
# Zero bytes after each block so that fixed-size header windows never run off the array.
_PAD = 256
_IP_WINDOW = 20
_L4_WINDOW = 8 + HEAD_BYTES

_PCAP_MAGICS = {
    0xA1B2C3D4: ("<", 1000),
    0xA1B23C4D: ("<", 1),
    0xD4C3B2A1: (">", 1000),
    0x4D3CB2A1: (">", 1),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
_PCAPNG_BOM_SWAPPED = 0x4D3C2B1A
_BT_IDB = 1
_BT_PB = 2
_BT_SPB = 3
_BT_EPB = 6
_PACKET_BLOCKS = frozenset({_BT_EPB, _BT_SPB, _BT_PB})
# Not packets, but Wireshark numbers them as frames: systemd journal export and custom blocks.
_NUMBERED_RECORDS = frozenset({0x00000009, 0x00000BAD, 0x40000BAD})
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_ETHERTYPE_IPV4 = 0x0800


@dataclass
class CaptureInfo:
    """What a capture held and what the reader skipped; final once iteration has finished.

    ``packets`` counts every record Wireshark numbers as a frame (like ``capinfos``; this
    includes pcapng custom and journal blocks, counted in ``skipped_records``); ``ipv4_packets``
    the rows yielded; ``untimed`` the pcapng simple packet blocks, which carry no time stamp and
    get the previous packet's. ``truncated`` means the file ends inside a record, or a damaged
    length field stopped the reading (see ``problem``); everything before that point was read.
    """

    file: str
    format: str
    link_types: list[int] = field(default_factory=list)
    interfaces: int = 0
    packets: int = 0
    ipv4_packets: int = 0
    truncated: bool = False
    problem: str | None = None
    skipped_non_ipv4: int = 0
    skipped_fragments: int = 0
    skipped_malformed: int = 0
    skipped_link: int = 0
    skipped_records: int = 0
    untimed: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "file": self.file,
            "format": self.format,
            "link_types": list(self.link_types),
            "interfaces": self.interfaces,
            "packets": self.packets,
            "ipv4_packets": self.ipv4_packets,
            "truncated": self.truncated,
            "problem": self.problem,
            "skipped": {
                "non_ipv4": self.skipped_non_ipv4,
                "fragments": self.skipped_fragments,
                "malformed": self.skipped_malformed,
                "link_type": self.skipped_link,
                "non_packet_records": self.skipped_records,
            },
            "untimed": self.untimed,
        }


@dataclass(frozen=True)
class PacketChunk:
    """Up to ``chunk_packets`` rows of :data:`PACKET_DTYPE`, in file order.

    ``info`` is the reader's live :class:`CaptureInfo`: complete only after the last chunk.
    """

    packets: PacketArray
    info: CaptureInfo


@dataclass
class _Interface:
    link_type: int
    snaplen: int
    ts_units: int  # units per second: 10**n or 2**n
    ts_offset_s: int


def _ts_to_ns(ticks: npt.NDArray[np.uint64], units: int) -> _I64:
    """Timestamp ticks (``units`` per second) to ns, exactly where int64 allows."""
    if units >= 1 << 63:  # absurd if_tsresol: every stamp is below one second
        return (ticks.astype(np.float64) * (1e9 / units)).astype(np.int64)
    if units == 1_000_000_000:
        return ticks.astype(np.int64)
    if 1_000_000_000 % units == 0:
        return ticks.astype(np.int64) * (1_000_000_000 // units)
    if units % 1_000_000_000 == 0:
        return (ticks // np.uint64(units // 1_000_000_000)).astype(np.int64)
    sec = ticks // np.uint64(units)
    frac = ticks % np.uint64(units)
    if units < (1 << 33):  # frac * 1e9 stays below 2**63
        frac_ns = (frac * np.uint64(1_000_000_000)) // np.uint64(units)
        return sec.astype(np.int64) * 1_000_000_000 + frac_ns.astype(np.int64)
    return sec.astype(np.int64) * 1_000_000_000 + (frac.astype(np.float64) * 1e9 / units).astype(
        np.int64
    )


def _be16(win: _U8, col: int) -> npt.NDArray[np.int64]:
    return (win[:, col].astype(np.int64) << 8) | win[:, col + 1]


def _gather(arr: _U8, offsets: _I64, width: int) -> _U8:
    """Rows of ``width`` bytes starting at each offset (one vectorised copy): ``arr`` seen as
    overlapping ``width``-byte items, one per byte offset, so that each row is one item copy."""
    items = np.ndarray(
        shape=(arr.size - width + 1,), dtype=np.dtype((np.void, width)), buffer=arr, strides=(1,)
    )
    rows: _U8 = items[offsets].view(np.uint8).reshape(-1, width)
    return rows


# Records stepped one by one before a verified chain (below) is tried, and the first window
# (bytes) a chain is searched in; the window grows fourfold while the chain runs out of it.
_PROBE_RECORDS = 16
_FIRST_WINDOW = 1 << 18


def _u32_at(arr: _U8, offsets: _I64, endian: str) -> _I64:
    """The unsigned 32-bit integers at ``offsets`` (any alignment), as int64."""
    values: _I64 = _gather(arr, offsets, 4).view(endian + "u4")[:, 0].astype(np.int64)
    return values


def _follow(cand: _I64, nxt: _I64, limit: int) -> _I64:
    """Indexes of the chain ``cand[0] -> nxt[0] -> ...`` through the sorted candidates, at most
    ``limit`` long. ``cand[0]`` is a known record boundary and ``nxt[i]`` is where the record at
    ``cand[i]`` ends if it is one, so every link is verified: a candidate is taken only when the
    previous record's length leads exactly to it, and the chain stops at the first record whose
    successor is not a candidate. Candidates inside a record (payload bytes that look like a
    header) are jumped over; when every candidate is a record, this is one vector comparison."""
    jumps = np.flatnonzero(nxt[:-1] != cand[1:])
    pieces: list[_I64] = []
    total = 0
    i = 0
    while total < limit:
        k = int(np.searchsorted(jumps, i))
        end = int(jumps[k]) if k < jumps.size else cand.size - 1
        pieces.append(np.arange(i, end + 1, dtype=np.int64))
        total += end + 1 - i
        if k >= jumps.size:
            break
        j = int(np.searchsorted(cand, nxt[end]))
        if j >= cand.size or cand[j] != nxt[end]:
            break
        i = j
    chain = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    return chain[:limit]


def _chain(
    n: int, pos: int, limit: int, find: Callable[[int, int], tuple[_I64, _I64]]
) -> tuple[_I64, int]:
    """Offsets of up to ``limit`` complete records from the record boundary ``pos``, found with
    no Python step per record, and the offset after them. ``find(pos, end)`` gives the possible
    record starts in ``[pos, end)`` (sorted; a cheap vectorised test of header fields, which
    payload bytes may pass too) and where each such record would end, keeping those that end
    within the ``n`` bytes held; :func:`_follow` keeps the true ones. The walk from a known
    boundary accepts exactly the records the one-by-one loop would (a subset of what it accepts,
    along the same boundaries) and leaves anything else to that loop. The window ``[pos, end)``
    grows fourfold while the chain runs out of it."""
    parts: list[_I64] = []
    total = 0
    window = _FIRST_WINDOW
    while total < limit and pos < n:
        end = min(n, pos + window)
        cand, nxt = find(pos, end)
        if not cand.size or cand[0] != pos:
            break
        idx = _follow(cand, nxt, limit - total)
        parts.append(cand[idx])
        total += idx.size
        pos = int(nxt[idx[-1]])
        if pos < end:  # the chain stopped inside the window (or at the limit)
            break
        window *= 4
    if not parts:
        return np.zeros(0, dtype=np.int64), pos
    return (np.concatenate(parts) if len(parts) > 1 else parts[0]), pos


def _pcap_finder(arr: _U8, n: int, endian: str) -> Callable[[int, int], tuple[_I64, _I64]]:
    """Possible pcap record starts: the upper 16 bits of the seconds field equal those of the
    record at ``pos`` (they change every 18 hours), tested at every byte offset at once."""
    hi_off = 2 if endian == "<" else 0

    def find(pos: int, end: int) -> tuple[_I64, _I64]:
        size = end - pos
        start = pos + hi_off
        pattern = arr[start : start + 2].view("<u2")[0]
        mask = np.zeros(size, dtype=np.bool_)
        even = arr[start : start + (size + 1) // 2 * 2].view("<u2") == pattern
        odd = arr[start + 1 : start + 1 + size // 2 * 2].view("<u2") == pattern
        mask[0::2] = even
        mask[1::2] = odd
        cand = np.flatnonzero(mask).astype(np.int64) + pos
        nxt = cand + 16 + _u32_at(arr, cand + 8, endian)
        ok = nxt <= n
        return cand[ok], nxt[ok]

    return find


def _pcapng_finder(arr: _U8, n: int, endian: str) -> Callable[[int, int], tuple[_I64, _I64]]:
    """Possible enhanced packet blocks (the blocks dumpcap writes): block type 6 at a 4-byte
    boundary, a plausible length, and the same length in the block's trailer. Other packet blocks
    are left to the one-by-one loop."""
    word = np.dtype(endian + "u4")

    def find(pos: int, end: int) -> tuple[_I64, _I64]:
        words = arr[pos : pos + (end - pos) // 4 * 4].view(word)
        cand = np.flatnonzero(words == _BT_EPB).astype(np.int64) * 4 + pos
        blen = _u32_at(arr, cand + 4, endian)
        nxt = cand + blen
        ok = (blen >= 32) & ((blen & 3) == 0) & (nxt <= n)
        cand, blen, nxt = cand[ok], blen[ok], nxt[ok]
        ok = _u32_at(arr, nxt - 4, endian) == blen
        return cand[ok], nxt[ok]

    return find


def _walk_pcap(
    buf: memoryview,
    arr: _U8,
    pos: int,
    cap: int,
    unpack: Callable[[memoryview, int], tuple[int]],
    endian: str,
) -> tuple[_I64, int]:
    """Offsets of up to ``cap`` complete pcap records from ``pos``, and the offset after them.

    The one inherently sequential step (record i+1 starts after record i's captured bytes) is a
    tight loop over the 16-byte record headers for a few records, then a verified chain
    (:func:`_chain`) for as long as it holds.
    """
    n = len(buf)
    parts: list[_I64] = []
    offsets: list[int] = []
    append = offsets.append
    count = 0
    find = _pcap_finder(arr, n, endian)
    while count < cap:
        steps = min(_PROBE_RECORDS, cap - count)
        for _ in range(steps):
            if pos + 16 > n:
                break
            nxt = pos + 16 + unpack(buf, pos + 8)[0]
            if nxt > n:
                break
            append(pos)
            pos = nxt
        else:
            count += steps
            if count < cap:
                run, pos = _chain(n, pos, cap - count, find)
                if run.size:
                    parts.append(np.asarray(offsets, dtype=np.int64))
                    parts.append(run)
                    offsets = []
                    append = offsets.append
                    count += run.size
            continue
        break
    parts.append(np.asarray(offsets, dtype=np.int64))
    return np.concatenate(parts), pos


def _walk_pcapng(
    buf: memoryview,
    arr: _U8,
    pos: int,
    cap: int,
    unpack2: Callable[[memoryview, int], tuple[int, int]],
    endian: str,
) -> tuple[_I64, int, str]:
    """Offsets of up to ``cap`` consecutive complete packet blocks (EPB, SPB, PB) from ``pos``,
    the offset after them, and why the walk stopped: ``"cap"``, ``"need"`` (fewer than 12 bytes
    left) or ``"block"`` (another block type, an incomplete or a damaged block at the offset).
    A few blocks one by one, then a verified chain (:func:`_chain`) for as long as it holds."""
    n = len(buf)
    parts: list[_I64] = []
    offsets: list[int] = []
    append = offsets.append
    count = 0
    stop = "cap"
    find = _pcapng_finder(arr, n, endian)
    while count < cap:
        steps = min(_PROBE_RECORDS, cap - count)
        for _ in range(steps):
            if pos + 12 > n:
                stop = "need"
                break
            btype, blen = unpack2(buf, pos)
            nxt = pos + blen
            if btype in _PACKET_BLOCKS and pos + 12 <= nxt <= n:
                append(pos)
                pos = nxt
                continue
            stop = "block"
            break
        else:
            count += steps
            if count < cap:
                run, pos = _chain(n, pos, cap - count, find)
                if run.size:
                    parts.append(np.asarray(offsets, dtype=np.int64))
                    parts.append(run)
                    offsets = []
                    append = offsets.append
                    count += run.size
            continue
        break
    parts.append(np.asarray(offsets, dtype=np.int64))
    return np.concatenate(parts), pos, stop


class _Decoder:
    """Vectorised link/IPv4/UDP decoding of a set of packet records; updates the skip counts."""

    def __init__(self, info: CaptureInfo) -> None:
        self.info = info

    def decode(
        self,
        arr: _U8,
        data_off: _I64,
        caplen: _I64,
        ts_ns: _I64,
        frames: _I64,
        link: _I64,
        iface: _I64,
    ) -> PacketArray:
        info = self.info
        n = data_off.size
        if n and bool((link == link[0]).all()):  # the usual case: one link type
            l2len, short, unsupported = self._link(arr, data_off, caplen, int(link[0]))
        else:
            l2len = np.full(n, -1, dtype=np.int64)  # -1: not IPv4 (or unsupported link)
            short = np.zeros(n, dtype=np.bool_)
            unsupported = np.ones(n, dtype=np.bool_)
            for lt in np.unique(link).tolist():
                m = link == lt
                l2len[m], short[m], unsupported[m] = self._link(arr, data_off[m], caplen[m], lt)

        short &= ~unsupported
        info.skipped_link += int(np.count_nonzero(unsupported))
        info.skipped_malformed += int(np.count_nonzero(short))
        is_ip = (l2len >= 0) & ~short
        info.skipped_non_ipv4 += int(np.count_nonzero(~is_ip & ~short & ~unsupported))

        # IPv4 header.
        ok = is_ip & (caplen - l2len >= _IP_WINDOW)
        info.skipped_malformed += int(np.count_nonzero(is_ip & ~ok))
        sel = None if ok.all() else np.flatnonzero(ok)
        ip_off = _take(data_off, sel) + _take(l2len, sel)
        avail = _take(caplen, sel) - _take(l2len, sel)
        ip = _gather(arr, ip_off, _IP_WINDOW)
        vihl = ip[:, 0]
        ihl = (vihl & 0x0F).astype(np.int64) * 4
        frag = _be16(ip, 6)
        valid = ((vihl >> 4) == 4) & (ihl >= 20) & (avail >= ihl)
        later_fragment = valid & ((frag & 0x1FFF) != 0)
        info.skipped_malformed += int(np.count_nonzero(~valid))
        info.skipped_fragments += int(np.count_nonzero(later_fragment))
        proto = ip[:, 9]
        l4_off = ip_off + ihl
        l4_avail = avail - ihl
        is_udp = proto == 17
        has_ports = is_udp | (proto == 6)
        # Ports (TCP, UDP) and the UDP header must have been captured.
        l4_short = valid & ~later_fragment & has_ports & (l4_avail < np.where(is_udp, 8, 4))
        info.skipped_malformed += int(np.count_nonzero(l4_short))
        keep = valid & ~later_fragment & ~l4_short
        k = None if keep.all() else np.flatnonzero(keep)

        # Index arrays, ``None`` meaning "every row" (the usual case: no copy): ``rows`` are the
        # records kept, ``p`` the kept rows with ports, ``u`` those of them that are UDP.
        rows = _compose(sel, k)
        ipk = _take(ip, k)
        size = ipk.shape[0]
        out = np.zeros(size, dtype=PACKET_DTYPE)
        out["ts_ns"] = _take(ts_ns, rows)
        out["frame"] = _take(frames, rows)
        out["iface"] = _take(iface, rows)
        out["src"] = ipk[:, 12:16].copy().view(">u4")[:, 0]
        out["dst"] = ipk[:, 16:20].copy().view(">u4")[:, 0]
        out["ip_len"] = _be16(ipk, 2)
        out["ip_id"] = _be16(ipk, 4)
        out["proto"] = _take(proto, k)
        out["dscp"] = ipk[:, 1] >> 2
        out["flags"] = np.where((_take(frag, k) & 0x2000) != 0, FLAG_MORE_FRAGMENTS, 0)

        ports = _take(has_ports, k)
        p = None if ports.all() else np.flatnonzero(ports)
        if p is None or p.size:
            pk = _compose(k, p)
            l4 = _gather(arr, _take(l4_off, pk), _L4_WINDOW)
            _put(out["sport"], p, _be16(l4, 0))
            _put(out["dport"], p, _be16(l4, 2))
            udp = _take(is_udp, pk)
            u = None if udp.all() else np.flatnonzero(udp)
            if u is None or u.size:
                l4u = _take(l4, u)
                payload_len = np.maximum(_be16(l4u, 4) - 8, 0)
                captured = _take(l4_avail, _compose(pk, u)) - 8
                head_len = np.clip(np.minimum(captured, payload_len), 0, HEAD_BYTES)
                head = l4u[:, 8:]
                part = np.flatnonzero(head_len < HEAD_BYTES)
                if part.size:  # zero-fill after the captured payload bytes
                    head[part] *= np.arange(HEAD_BYTES) < head_len[part, None]
                up = _compose(p, u)
                _put(out["payload_len"], up, np.minimum(payload_len, 0xFFFF))
                _put(out["head_len"], up, head_len)
                _put(out["head"], up, head)
        info.ipv4_packets += size
        return out

    @staticmethod
    def _link(arr: _U8, data_off: _I64, caplen: _I64, lt: int) -> tuple[_I64, _Bool, _Bool]:
        """Link-layer header length of each record of link type ``lt`` (-1: not IPv4), whether
        it was cut short, and whether the link type is unsupported."""
        n = data_off.size
        if lt == LINKTYPE_ETHERNET:
            win = _gather(arr, data_off, 22)
            et = _be16(win, 12)
            hl = np.full(n, 14, dtype=np.int64)
            for col in (16, 20):  # up to two 802.1Q/802.1ad tags
                tagged = (et == _VLAN_TPIDS[0]) | (et == _VLAN_TPIDS[1]) | (et == _VLAN_TPIDS[2])
                if not tagged.any():
                    break
                tagged &= caplen >= col + 2
                et = np.where(tagged, _be16(win, col), et)
                hl += 4 * tagged
            l2len = np.where(et == _ETHERTYPE_IPV4, hl, -1)
            short = caplen < 14
        elif lt in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
            win = _gather(arr, data_off, 22)
            col, hl_c = (14, 16) if lt == LINKTYPE_LINUX_SLL else (0, 20)
            l2len = np.where(_be16(win, col) == _ETHERTYPE_IPV4, hl_c, -1)
            short = caplen < hl_c
        elif lt in (LINKTYPE_RAW, LINKTYPE_IPV4):
            version = arr[data_off] >> 4
            l2len = np.where(version == 4, 0, -1)
            short = caplen < 1
        else:
            return (
                np.full(n, -1, dtype=np.int64),
                np.zeros(n, dtype=np.bool_),
                np.ones(n, dtype=np.bool_),
            )
        return l2len.astype(np.int64), short, np.zeros(n, dtype=np.bool_)


def _take(values: npt.NDArray[Any], index: _I64 | None) -> npt.NDArray[Any]:
    """``values[index]``; ``None`` stands for every row (no copy)."""
    return values if index is None else values[index]


def _compose(outer: _I64 | None, inner: _I64 | None) -> _I64 | None:
    """The index ``outer[inner]``, with ``None`` for every row as in :func:`_take`."""
    if inner is None:
        return outer
    return inner if outer is None else outer[inner]


def _put(column: npt.NDArray[Any], index: _I64 | None, values: npt.NDArray[Any]) -> None:
    """``column[index] = values``; ``None`` stands for every row."""
    if index is None:
        column[...] = values
    else:
        column[index] = values


class _Buffer:
    """The unread tail of a file in one zero-padded numpy array: ``buf`` (a memoryview of its
    first ``n`` bytes) for the record walk, ``arr`` for the vectorised gathers. Each block is
    read straight into the array (one copy of the unconsumed tail, none of the new data)."""

    def __init__(self, f: io.BufferedReader, start: int) -> None:
        self.f = f
        self.base = start  # file offset of buf[0]
        self.n = 0
        self.arr: _U8 = np.zeros(_PAD, dtype=np.uint8)
        self.buf = self.arr.data[:0]
        f.seek(start)

    def refill(self, consumed: int, need: int) -> bool:
        """Drop the first ``consumed`` bytes and append at least ``need`` (or a block); False at
        end of file (the buffer then holds only the unconsumed tail)."""
        tail = self.n - consumed
        want = max(_BLOCK_BYTES, need)
        arr = np.empty(tail + want + _PAD, dtype=np.uint8)
        arr[:tail] = self.arr[consumed : self.n]
        got = self.f.readinto(arr.data[tail : tail + want]) or 0
        self.base += consumed
        self.n = tail + got
        arr[self.n : self.n + _PAD] = 0
        self.arr = arr
        self.buf = arr.data[: self.n]
        return got > 0


@dataclass
class _Section:
    endian: str
    first_iface: int  # global index of this section's interface 0
    ifaces: list[_Interface] = field(default_factory=list)


class CaptureReader:
    """Iterable over the :class:`PacketChunk` of one capture file; ``info`` describes it.

    The file header is checked on construction, so a missing, empty or non-capture file fails
    at once with :class:`~testbed.errors.AnalysisError`; the records are read lazily, and each
    iteration reads the file again from the start.
    """

    def __init__(self, path: str | os.PathLike[str], chunk_packets: int = 200_000) -> None:
        if chunk_packets < 1:
            raise AnalysisError(f"chunk_packets must be >= 1, got {chunk_packets}")
        self.path = Path(path)
        self.chunk_packets = chunk_packets
        try:
            with self.path.open("rb") as f:
                head = f.read(28)
        except OSError as exc:
            raise AnalysisError(f"cannot read capture {self.path}: {exc.strerror or exc}") from exc
        if not head:
            raise AnalysisError(f"capture {self.path} is empty (0 bytes)")
        magic = struct.unpack_from("<I", head)[0] if len(head) >= 4 else None
        if magic in _PCAP_MAGICS:
            if len(head) < 24:
                raise AnalysisError(
                    f"capture {self.path}: pcap file header truncated ({len(head)} of 24 bytes)"
                )
            self._format = "pcap"
        elif magic == _PCAPNG_SHB:
            if len(head) < 28:
                raise AnalysisError(
                    f"capture {self.path}: pcapng section header truncated ({len(head)} bytes)"
                )
            bom = struct.unpack_from("<I", head, 8)[0]
            if bom not in (_PCAPNG_BOM, _PCAPNG_BOM_SWAPPED):
                raise AnalysisError(
                    f"capture {self.path}: pcapng section header has a bad byte-order magic "
                    f"0x{bom:08x}"
                )
            self._format = "pcapng"
        elif head[:2] == b"\x1f\x8b":
            raise AnalysisError(f"capture {self.path} is gzip-compressed; decompress it first")
        else:
            raise AnalysisError(
                f"{self.path} is not a pcap or pcapng capture (starts with {head[:4].hex()})"
            )
        self.info = CaptureInfo(file=str(self.path), format=self._format)

    def __iter__(self) -> Iterator[PacketChunk]:
        self.info = CaptureInfo(file=str(self.path), format=self._format)
        with self.path.open("rb") as f:
            tables = self._pcap(f) if self._format == "pcap" else self._pcapng(f)
            for table in _rechunk(tables, self.chunk_packets):
                yield PacketChunk(packets=table, info=self.info)

    def _stop(self, offset: int, what: str) -> None:
        self.info.truncated = True
        if self.info.problem is None:
            self.info.problem = f"{what} at file offset {offset}; read up to there"

    def _next_frames(self, n: int) -> _I64:
        first = self.info.packets + 1
        self.info.packets += n
        return np.arange(first, first + n, dtype=np.int64)

    # -- pcap ------------------------------------------------------------------------------------

    def _pcap(self, f: io.BufferedReader) -> Iterator[PacketArray]:
        head = f.read(24)
        magic = struct.unpack_from("<I", head)[0]
        endian, frac_mult = _PCAP_MAGICS[magic]
        link = struct.unpack_from(endian + "I", head, 20)[0] & 0xFFFF
        self.info.link_types = [link]
        self.info.interfaces = 1
        hdr_dt = np.dtype(
            [
                ("sec", endian + "u4"),
                ("frac", endian + "u4"),
                ("incl", endian + "u4"),
                ("orig", endian + "u4"),
            ]
        )
        unpack = struct.Struct(endian + "I").unpack_from
        decoder = _Decoder(self.info)
        cap = self.chunk_packets
        reader = _Buffer(f, 24)
        pos = 0
        need = 0
        while reader.refill(pos, need):
            buf, arr, n = reader.buf, reader.arr, reader.n
            pos = 0
            while True:
                offs, pos = _walk_pcap(buf, arr, pos, cap, unpack, endian)
                if offs.size:
                    hdr = _gather(arr, offs, 16).view(hdr_dt)[:, 0]
                    ts_ns = hdr["sec"].astype(np.int64) * 1_000_000_000
                    ts_ns += hdr["frac"].astype(np.int64) * frac_mult
                    yield decoder.decode(
                        arr,
                        offs + 16,
                        hdr["incl"].astype(np.int64),
                        ts_ns,
                        self._next_frames(offs.size),
                        np.full(offs.size, link, dtype=np.int64),
                        np.zeros(offs.size, dtype=np.int64),
                    )
                if offs.size < cap:
                    break
            need = 0
            if pos + 16 <= n:
                incl = unpack(buf, pos + 8)[0]
                if incl > _MAX_RECORD:
                    self._stop(reader.base + pos, f"record length {incl} is implausible (damaged)")
                    return
                need = 16 + incl - (n - pos)
        if reader.n:
            self._stop(reader.base, f"file ends inside a record ({reader.n} bytes left)")

    # -- pcapng ----------------------------------------------------------------------------------

    def _pcapng(self, f: io.BufferedReader) -> Iterator[PacketArray]:
        decoder = _Decoder(self.info)
        cap = self.chunk_packets
        reader = _Buffer(f, 0)
        section: _Section | None = None
        unpack2 = struct.Struct("<II").unpack_from
        last_ts = 0
        pos = 0
        need = 0
        while reader.refill(pos, need):
            buf, n = reader.buf, reader.n
            pos = 0
            need = 0
            while True:
                offs, pos, stop = _walk_pcapng(
                    buf, reader.arr, pos, cap, unpack2, section.endian if section else "<"
                )
                if offs.size:
                    assert section is not None  # a packet block before any SHB is rejected below
                    table, last_ts = self._pcapng_table(reader.arr, offs, section, last_ts)
                    yield decoder.decode(*table)
                if stop == "cap":
                    continue
                if stop == "need":
                    break
                # A non-packet block, an incomplete block, or a damaged length at ``pos``.
                btype, blen = unpack2(buf, pos)
                if btype == _PCAPNG_SHB:
                    bom = struct.unpack_from("<I", buf, pos + 8)[0] if pos + 12 <= n else 0
                    if bom == _PCAPNG_BOM_SWAPPED:
                        btype, blen = struct.unpack_from(">II", buf, pos)
                    elif bom != _PCAPNG_BOM:
                        self._stop(reader.base + pos, "section header with a bad byte-order magic")
                        return
                if blen < 12 or blen % 4 or blen > _MAX_RECORD:
                    self._stop(reader.base + pos, f"block length {blen} is invalid (damaged)")
                    return
                if pos + blen > n:
                    need = blen - (n - pos)
                    break
                if btype == _PCAPNG_SHB:
                    endian = "<" if bom == _PCAPNG_BOM else ">"
                    section = _Section(endian=endian, first_iface=self.info.interfaces)
                    unpack2 = struct.Struct(endian + "II").unpack_from
                elif section is None:
                    self._stop(reader.base + pos, "block before the first section header")
                    return
                elif btype in _NUMBERED_RECORDS:
                    self.info.packets += 1
                    self.info.skipped_records += 1
                elif btype == _BT_IDB:
                    iface = _parse_idb(bytes(buf[pos : pos + blen]), section.endian)
                    section.ifaces.append(iface)
                    self.info.interfaces += 1
                    if iface.link_type not in self.info.link_types:
                        self.info.link_types.append(iface.link_type)
                pos += blen
        if reader.n:
            self._stop(reader.base, f"file ends inside a block ({reader.n} bytes left)")

    def _pcapng_table(
        self, arr: _U8, offs: _I64, section: _Section, last_ts: int
    ) -> tuple[tuple[_U8, _I64, _I64, _I64, _I64, _I64, _I64], int]:
        """Decoder inputs for a run of EPB/SPB/PB blocks of one section, and the last stamp."""
        e = section.endian
        n = offs.size
        dt = np.dtype(
            [
                ("type", e + "u4"),
                ("len", e + "u4"),
                ("iface", e + "u4"),
                ("ts_hi", e + "u4"),
                ("ts_lo", e + "u4"),
                ("caplen", e + "u4"),
                ("origlen", e + "u4"),
            ]
        )
        hdr = _gather(arr, offs, 28).view(dt)[:, 0]
        btype = hdr["type"]
        blen = hdr["len"].astype(np.int64)
        word2 = hdr["iface"].astype(np.int64)
        spb = btype == _BT_SPB
        pb = btype == _BT_PB
        # PB: u16 interface id then u16 drop count, in the section's byte order.
        local = np.where(pb, (word2 >> 16) if e == ">" else (word2 & 0xFFFF), word2)
        local[spb] = 0
        caplen = np.minimum(hdr["caplen"].astype(np.int64), blen - 32)
        data_off = offs + 28
        ifaces = section.ifaces
        if spb.any():
            snap = ifaces[0].snaplen if ifaces and ifaces[0].snaplen else _MAX_RECORD
            caplen[spb] = np.minimum(np.minimum(word2[spb], blen[spb] - 16), snap)
            data_off[spb] = offs[spb] + 12
        caplen = np.maximum(caplen, 0)

        ticks = (hdr["ts_hi"].astype(np.uint64) << np.uint64(32)) | hdr["ts_lo"].astype(np.uint64)
        ts_ns = np.zeros(n, dtype=np.int64)
        link = np.full(n, -1, dtype=np.int64)
        one = bool((local == local[0]).all())
        for local_id in [int(local[0])] if one else np.unique(local).tolist():
            if local_id >= len(ifaces):
                continue  # unknown interface: link -1, counted as unsupported
            m = slice(None) if one else local == local_id
            iface = ifaces[local_id]
            ts_ns[m] = _ts_to_ns(ticks[m], iface.ts_units) + iface.ts_offset_s * 1_000_000_000
            link[m] = iface.link_type
        if spb.any():
            # SPBs carry no time stamp: they inherit the previous packet's.
            self.info.untimed += int(np.count_nonzero(spb))
            idx = np.where(spb, -1, np.arange(n))
            prev = np.maximum.accumulate(idx)
            ts_ns[spb] = np.where(prev[spb] >= 0, ts_ns[np.maximum(prev[spb], 0)], last_ts)
        glob = local + section.first_iface
        frames = self._next_frames(n)
        return (arr, data_off, caplen, ts_ns, frames, link, glob), int(ts_ns[-1])


def _parse_idb(block: bytes, endian: str) -> _Interface:
    """Link type, snap length and the time-stamp options of an Interface Description Block."""
    link_type, _, snaplen = struct.unpack_from(endian + "HHI", block, 8)
    units = 1_000_000
    offset_s = 0
    pos = 16
    end = len(block) - 4
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", block, pos)
        value = block[pos + 4 : pos + 4 + length]
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            res = value[0]
            units = 2 ** (res & 0x7F) if res & 0x80 else 10**res
        elif code == 14 and length >= 8:  # if_tsoffset
            offset_s = struct.unpack_from(endian + "q", value)[0]
        pos += 4 + ((length + 3) & ~3)
    return _Interface(link_type=link_type, snaplen=snaplen, ts_units=units, ts_offset_s=offset_s)


def _rechunk(tables: Iterator[PacketArray], size: int) -> Iterator[PacketArray]:
    """Regroup tables (each at most ``size`` rows) into chunks of at most ``size`` rows: a table
    of at least ``min(size, _MIN_CHUNK)`` rows passes as it is (no copy), smaller ones are merged
    so that a capture of odd blocks does not come as many tiny chunks."""
    least = min(size, _MIN_CHUNK)
    pending: list[PacketArray] = []
    count = 0
    for table in tables:
        if not table.size:
            continue
        if not pending and table.size >= least:
            yield table
            continue
        pending.append(table)
        count += table.size
        while count >= least:
            merged = pending[0] if len(pending) == 1 else np.concatenate(pending)
            yield merged[:size]
            rest = merged[size:]
            pending = [rest] if rest.size else []
            count = rest.size
    if count:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


def read_packets(
    path: str | os.PathLike[str], chunk_packets: int = 200_000
) -> Iterator[PacketChunk]:
    """Chunks of the IPv4 packet table of one capture; see :class:`CaptureReader`.

    The header is checked before this returns, so a bad file fails here, not at first ``next``.
    """
    return iter(CaptureReader(path, chunk_packets))

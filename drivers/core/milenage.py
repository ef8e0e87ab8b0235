"""MILENAGE, the 3GPP example authentication and key agreement functions (TS 35.206), built
on AES-128 from the ``cryptography`` package.

The emulated core authenticates attaching UEs the way an HSS/MME pair does: it sends a RAND,
the UE answers RES = f2(K, OPc, RAND), and the core compares it with its own XRES. Both sides
use this module, so a UE provisioned with the wrong K/OPc is refused (EMM cause 3). f1, f3..f5
and f1*/f5* are here too because the published test sets (TS 35.207/35.208) check them all,
and an implementation that gets them all right is very unlikely to get f2 wrong.

Constants of TS 35.206 (the algorithm specification itself was not read: [mem]; the test sets
that exercise them come from published sources, see ``tests/drivers/test_core_state.py``):
r1..r5 = 64, 0, 32, 64, 96 bits, c1..c5 = 0, 1, 2, 4, 8 (in the last octet).
"""

from __future__ import annotations

from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["F2345", "f1", "f5_star", "f2345", "milenage_res", "opc_from_op"]

_ROTATIONS = (64, 0, 32, 64, 96)  # r1..r5 in bits [mem, TS 35.206]
_CONSTANTS = (0, 1, 2, 4, 8)  # c1..c5, the integer value of the 128-bit constant [mem]


class F2345(NamedTuple):
    """The outputs computed from RAND alone."""

    res: bytes  # f2, 64 bits
    ck: bytes  # f3, 128 bits
    ik: bytes  # f4, 128 bits
    ak: bytes  # f5, 48 bits


def _aes(k: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _rot(block: bytes, bits: int) -> bytes:
    """Cyclic left rotation of a 128-bit block by a whole number of octets (all r are)."""
    n = bits // 8
    return block[n:] + block[:n]


def _check(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, not {len(value)}")


def _out(k: bytes, opc: bytes, temp: bytes, i: int) -> bytes:
    """OUTi = E_K(rot(TEMP xor OPc, ri) xor ci) xor OPc, for i = 2..5 (index 1..4)."""
    c = _CONSTANTS[i].to_bytes(16, "big")
    return _xor(_aes(k, _xor(_rot(_xor(temp, opc), _ROTATIONS[i]), c)), opc)


def _temp(k: bytes, opc: bytes, rand: bytes) -> bytes:
    _check("K", k, 16)
    _check("OPc", opc, 16)
    _check("RAND", rand, 16)
    return _aes(k, _xor(rand, opc))


def opc_from_op(k: bytes, op: bytes) -> bytes:
    """OPc = OP xor E_K(OP): what an HSS stores when the operator gave OP."""
    _check("K", k, 16)
    _check("OP", op, 16)
    return _xor(op, _aes(k, op))


def f1(k: bytes, opc: bytes, rand: bytes, sqn: bytes, amf: bytes) -> tuple[bytes, bytes]:
    """(MAC-A, MAC-S): f1 (network authentication) and f1* (resynchronisation)."""
    _check("SQN", sqn, 6)
    _check("AMF", amf, 2)
    temp = _temp(k, opc, rand)
    in1 = sqn + amf + sqn + amf
    rotated = _rot(_xor(in1, opc), _ROTATIONS[0])
    out1 = _xor(_aes(k, _xor(_xor(temp, rotated), _CONSTANTS[0].to_bytes(16, "big"))), opc)
    return out1[:8], out1[8:]


def f2345(k: bytes, opc: bytes, rand: bytes) -> F2345:
    """RES, CK, IK and AK for one RAND."""
    temp = _temp(k, opc, rand)
    out2 = _out(k, opc, temp, 1)
    return F2345(res=out2[8:], ck=_out(k, opc, temp, 2), ik=_out(k, opc, temp, 3), ak=out2[:6])


def f5_star(k: bytes, opc: bytes, rand: bytes) -> bytes:
    """AK for resynchronisation (f5*)."""
    return _out(k, opc, _temp(k, opc, rand), 4)[:6]


def milenage_res(k_hex: str, opc_hex: str, rand_hex: str) -> str:
    """The UE's RES (f2) as lower-case hex: what an emulated UE answers to a challenge."""
    res = f2345(bytes.fromhex(k_hex), bytes.fromhex(opc_hex), bytes.fromhex(rand_hex)).res
    return res.hex()

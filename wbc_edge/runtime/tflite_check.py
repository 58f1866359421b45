"""A structural bounds check of a TFLite flatbuffer, in pure Python (no flatbuffers package, no interpreter).

Why: tflite-runtime 2.14 - the only interpreter on 32-bit Raspberry Pi OS - builds the model from the file
without verifying it, and a truncated or damaged .tflite crashes the whole process (SIGSEGV, seen under
armv7l emulation: benchmarks/arm/).  LiteRT verifies, but its message is less specific.  So the runtime
checks first that every table, vector and string it reaches from the root (operator codes, subgraphs,
tensors, operators, buffers) lies inside the file and that the indices between them are in range, and
refuses the file with one line otherwise.  It reads only what the schema defines at fixed field slots:

    Model:    1 operator_codes, 2 subgraphs, 4 buffers
    SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators
    Tensor:   0 shape, 2 buffer, 3 name
    Operator: 0 opcode_index, 1 inputs, 2 outputs, 4 builtin_options (a table)
    Buffer:   0 data, 1 offset (external data of >2 GB models: then the data lies after the flatbuffer)

Not a full flatbuffer verifier (options tables are only bounds-checked at their start); it catches
truncation and dangling offsets, which is what crashes the old interpreter.  Imported by the runtime: it must
stay free of TensorFlow and flatbuffers.
"""

from __future__ import annotations

import struct

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.n = len(data)

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise _Bad(f"{what} at byte {pos} (+{size}) lies outside the {self.n}-byte file")

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return _U32.unpack_from(self.d, pos)[0]

    def i32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return _I32.unpack_from(self.d, pos)[0]

    def table(self, pos: int, what: str) -> tuple[int, int, int]:
        """(table position, vtable position, vtable size)."""
        soff = self.i32(pos, what)
        vt = pos - soff
        self.need(vt, 4, f"{what} vtable")
        vt_size, tbl_size = _U16.unpack_from(self.d, vt)[0], _U16.unpack_from(self.d, vt + 2)[0]
        if vt_size < 4 or vt_size % 2:
            raise _Bad(f"{what} has a malformed vtable")
        self.need(vt, vt_size, f"{what} vtable")
        self.need(pos, max(4, tbl_size), what)
        return pos, vt, vt_size

    def field(self, tbl: tuple[int, int, int], slot: int) -> int | None:
        """Absolute position of field `slot`, or None when absent."""
        pos, vt, vt_size = tbl
        o = 4 + 2 * slot
        if o + 2 > vt_size:
            return None
        off = _U16.unpack_from(self.d, vt + o)[0]
        return pos + off if off else None

    def ref(self, at: int, what: str) -> int:
        return at + self.u32(at, what)

    def vector(self, tbl, slot: int, elem: int, what: str) -> tuple[int, int] | None:
        """(start of elements, length) of a vector field, bounds-checked; None when absent."""
        f = self.field(tbl, slot)
        if f is None:
            return None
        v = self.ref(f, what)
        length = self.u32(v, what)
        self.need(v + 4, length * elem, what)
        return v + 4, length

    def tables(self, tbl, slot: int, what: str) -> list[tuple[int, int, int]]:
        vec = self.vector(tbl, slot, 4, what)
        if vec is None:
            return []
        start, length = vec
        return [self.table(self.ref(start + 4 * i, f"{what}[{i}]"), f"{what}[{i}]") for i in range(length)]

    def ints(self, tbl, slot: int, what: str) -> list[int]:
        vec = self.vector(tbl, slot, 4, what)
        if vec is None:
            return []
        start, length = vec
        return list(struct.unpack_from(f"<{length}i", self.d, start))

    def scalar_u32(self, tbl, slot: int, default: int = 0) -> int:
        f = self.field(tbl, slot)
        return default if f is None else self.u32(f, "scalar")


def flatbuffer_problem(data: bytes) -> str | None:
    """None when the TFLite flatbuffer `data` (without any appended zip) is structurally sound, else a short
    reason ("subgraph 0 tensor 17 shape at byte ... lies outside the ...-byte file")."""
    r = _Reader(bytes(data))
    try:
        if r.n < 8 or data[4:8] != b"TFL3":
            return "missing 'TFL3' identifier"
        model = r.table(r.u32(0, "root offset"), "model")
        n_codes = len(r.tables(model, 1, "operator_codes"))
        buffers = r.tables(model, 4, "buffers")
        for i, b in enumerate(buffers):
            f_off = r.field(b, 1)
            external = False
            if f_off is not None:
                r.need(f_off, 8, f"buffer {i} offset")
                external = struct.unpack_from("<Q", data, f_off)[0] > 1
            if not external:
                r.vector(b, 0, 1, f"buffer {i} data")
        subgraphs = r.tables(model, 2, "subgraphs")
        if not subgraphs:
            return "the model has no subgraph"
        for s, sg in enumerate(subgraphs):
            tensors = r.tables(sg, 0, f"subgraph {s} tensors")
            nt = len(tensors)
            for t, tt in enumerate(tensors):
                r.vector(tt, 0, 4, f"subgraph {s} tensor {t} shape")
                name = r.field(tt, 3)
                if name is not None:
                    r.vector(tt, 3, 1, f"subgraph {s} tensor {t} name")
                if r.scalar_u32(tt, 2) >= max(1, len(buffers)):
                    return f"subgraph {s} tensor {t} refers to buffer {r.scalar_u32(tt, 2)} of {len(buffers)}"
            for what, slot in (("inputs", 1), ("outputs", 2)):
                bad = [x for x in r.ints(sg, slot, f"subgraph {s} {what}") if not 0 <= x < nt]
                if bad:
                    return f"subgraph {s} {what} refer to tensor {bad[0]} of {nt}"
            for o, op in enumerate(r.tables(sg, 3, f"subgraph {s} operators")):
                if r.scalar_u32(op, 0) >= n_codes:
                    return f"subgraph {s} operator {o} has opcode {r.scalar_u32(op, 0)} of {n_codes}"
                for what, slot in (("inputs", 1), ("outputs", 2)):
                    bad = [x for x in r.ints(op, slot, f"operator {o} {what}") if not -1 <= x < nt]
                    if bad:
                        return f"subgraph {s} operator {o} {what} refer to tensor {bad[0]} of {nt}"
                opts = r.field(op, 4)
                if opts is not None:
                    r.table(r.ref(opts, f"operator {o} options"), f"subgraph {s} operator {o} options")
    except _Bad as exc:
        return str(exc)
    return None

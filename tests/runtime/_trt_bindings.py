"""What a TensorRT Python wheel defines, read without importing it: the names of the `tensorrt`
module, its classes' methods and properties, and the members of each enum.

`tensorrt-cu12-bindings` (PyPI, ~1.2 MB) holds `tensorrt_bindings/tensorrt.so` (pybind11) and a
plain-Python `__init__.py`; the .so cannot be loaded without NVIDIA's libraries, but it is an
ELF file whose code passes every Python name to pybind11 as a string literal:

    lea rcx, [rip+doc]; lea rsi, [rip+"FP16"]; call pybind11::enum_<nvinfer1::BuilderFlag>::value

So the identifiers are the strings the code loads with a rip-relative `lea` (that also finds
names the linker merged into the tail of a longer string: "INT8" lives inside "UINT8"), and an
enum's members are the last identifier loaded before each call of `enum_<E>::value` (the symbol
table names E). Parsing is plain Python (struct, re): no `strings`, no disassembler.
"""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import zipfile
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "tensorrt-cu12-bindings"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEA_RIP = re.compile(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]")  # lea r64, [rip+disp32]
_ENUM_VALUE = re.compile(r"_ZN8pybind115enum_IN((?:\d+[A-Za-z_]\w*?)+)EE5valueEPKc")


@dataclass(frozen=True)
class Bindings:
    """The names one TensorRT version's Python module defines."""

    version: str
    identifiers: frozenset[str]  # every name the bindings hand to pybind11 (classes, methods, members, args)
    enums: dict[str, frozenset[str]]  # enum (C++ name, e.g. BuilderFlag, Severity) -> member names
    module_names: frozenset[str] = field(default_factory=frozenset)  # defined in __init__.py (nptype, __version__)
    logger_severities: bool = False  # __init__.py copies ILogger.Severity's members onto Logger

    def has_module_attr(self, name: str) -> bool:
        return name in self.module_names or name in self.identifiers

    def enum(self, name: str) -> frozenset[str]:
        if name not in self.enums:
            raise KeyError(f"TensorRT {self.version} bindings define no enum {name}")
        return self.enums[name]


# ---------------------------------------------------------------------------- the wheel


def download_wheel(version: str, cache_dir: Path, timeout: float = 120) -> Path | None:
    """The bindings wheel of `version` in `cache_dir` (downloaded once with pip); None when pip
    cannot get it (offline, no index)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    pattern = f"tensorrt_cu12_bindings-{version}-*.whl"
    found = sorted(cache_dir.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "20",
               "-d", str(cache_dir), f"{PACKAGE}=={version}"]
        try:
            subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = sorted(cache_dir.glob(pattern))
    return found[0] if found else None


def read_bindings(wheel: Path) -> Bindings:
    """Bindings from a downloaded wheel (its tensorrt.so and __init__.py)."""
    with zipfile.ZipFile(wheel) as zf:
        so = zf.read("tensorrt_bindings/tensorrt.so")
        init = zf.read("tensorrt_bindings/__init__.py").decode()
    version = re.search(r'^__version__\s*=\s*"([^"]+)"', init, re.M)
    if version is None:
        raise ValueError(f"{wheel.name}: no __version__ in tensorrt_bindings/__init__.py")
    elf = Elf(so)
    leas = elf.lea_strings()
    identifiers = {s for _, s in leas if IDENTIFIER.fullmatch(s)} | elf.rodata_identifiers()
    return Bindings(
        version=version.group(1),
        identifiers=frozenset(identifiers),
        enums={k: frozenset(v) for k, v in elf.enum_members(leas).items()},
        module_names=frozenset(init_names(init)),
        logger_severities="setattr(Logger, attr, value)" in init and "ILogger.Severity.__members__" in init,
    )


def init_names(source: str) -> set[str]:
    """Top-level names `__init__.py` defines itself (functions, assignments): nptype, volume, __version__."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


# ---------------------------------------------------------------------------- the ELF file


@dataclass(frozen=True)
class Section:
    addr: int
    offset: int
    size: int


class Elf:
    """Just enough of a 64-bit little-endian ELF shared object: sections, symbols, code references."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError("not a 64-bit little-endian ELF file")
        self.data = data
        self.sections = self._sections()
        for name in (".text", ".rodata", ".symtab", ".strtab"):
            if name not in self.sections:
                raise ValueError(f"ELF file has no {name} section")
        self.text = self._bytes(self.sections[".text"])

    def _bytes(self, s: Section) -> bytes:
        return self.data[s.offset: s.offset + s.size]

    def _sections(self) -> dict[str, Section]:
        (shoff,) = struct.unpack_from("<Q", self.data, 0x28)
        entsize, count, names_index = struct.unpack_from("<HHH", self.data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", self.data, shoff + i * entsize) for i in range(count)]
        names_offset = raw[names_index][4]
        out = {}
        for name, _type, _flags, addr, offset, size in raw:
            out[self._cstring(names_offset + name).decode()] = Section(addr, offset, size)
        return out

    def _cstring(self, offset: int, limit: int = 1 << 16) -> bytes:
        end = self.data.find(b"\0", offset, offset + limit)
        return self.data[offset: end if end >= 0 else offset]

    def rodata_identifiers(self) -> set[str]:
        """Whole NUL-terminated strings of .rodata that are identifiers."""
        runs = self._bytes(self.sections[".rodata"]).split(b"\0")
        return {r.decode() for r in runs if r and IDENTIFIER.fullmatch(r.decode("latin-1"))}

    def lea_strings(self) -> list[tuple[int, str]]:
        """(offset in .text, string) for each rip-relative lea that points at a printable C string in .rodata."""
        text, ro = self.sections[".text"], self.sections[".rodata"]
        out = []
        for m in _LEA_RIP.finditer(self.text):
            (disp,) = struct.unpack_from("<i", self.text, m.start() + 3)
            target = text.addr + m.start() + 7 + disp
            if not ro.addr <= target < ro.addr + ro.size:
                continue
            raw = self._cstring(ro.offset + target - ro.addr, 8192)
            if raw and all(32 <= c < 127 or c in (9, 10) for c in raw):
                out.append((m.start(), raw.decode()))
        return out

    def functions(self) -> list[tuple[int, str]]:
        """(address, mangled name) of the function symbols."""
        symtab, strtab = self.sections[".symtab"], self.sections[".strtab"]
        out = []
        for i in range(symtab.size // 24):
            name, info, _other, _shndx, value, size = struct.unpack_from("<IBBHQQ", self.data, symtab.offset + i * 24)
            if info & 0xF == 2 and size:  # STT_FUNC
                out.append((value, self._cstring(strtab.offset + name).decode()))
        return out

    def calls_to(self, targets: dict[int, str]) -> list[tuple[int, str]]:
        """(offset in .text, targets[address]) for each `call rel32` to one of `targets`."""
        base = self.sections[".text"].addr
        out = []
        for m in re.finditer(rb"\xe8", self.text):
            i = m.start()
            if i + 5 > len(self.text):
                break
            (rel,) = struct.unpack_from("<i", self.text, i + 1)
            target = targets.get(base + i + 5 + rel)
            if target is not None:
                out.append((i, target))
        return out

    def enum_members(self, leas: list[tuple[int, str]]) -> dict[str, set[str]]:
        """enum -> members: at each call of pybind11::enum_<E>::value, the last identifier loaded
        since the previous such call (the doc string is loaded too; it is no identifier)."""
        targets = {}
        for addr, name in self.functions():
            m = _ENUM_VALUE.match(name)
            if m and not name.endswith(".cold"):
                targets[addr] = _mangled_parts(m.group(1))[-1]
        positions = [p for p, _ in leas]
        members: dict[str, set[str]] = {}
        previous = 0
        for at, enum in self.calls_to(targets):
            window = leas[bisect_left(positions, max(previous, at - 256)): bisect_left(positions, at)]
            previous = at
            names = [s for _, s in window if IDENTIFIER.fullmatch(s)]
            if names:
                members.setdefault(enum, set()).add(names[-1])
        return members


def _mangled_parts(nested: str) -> list[str]:
    """'8nvinfer17ILogger8Severity' -> ['nvinfer1', 'ILogger', 'Severity']."""
    parts = []
    while nested:
        digits = re.match(r"\d+", nested).group()
        n = int(digits)
        parts.append(nested[len(digits): len(digits) + n])
        nested = nested[len(digits) + n:]
    return parts

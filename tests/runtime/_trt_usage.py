"""Which TensorRT names our code uses, read from its source by AST (nothing is imported).

A value is a TensorRT object when it comes from the module (a name or `self.` attribute assigned
from `trt`, from `import_tensorrt()`, or from an expression rooted at another TensorRT object:
`builder = trt.Builder(logger)`, `network = builder.create_network(flags)`, tuple assignments
pairwise). Every attribute chain rooted at one is a use:

    trt.BuilderFlag.TF32         -> Use(("BuilderFlag", "TF32"), on_module=True)
    trt.Logger(...)              -> Use(("Logger",), on_module=True)
    network.get_input(i).name    -> Use(("get_input", "name"), on_module=False)
    hasattr(err, "node_name")    -> Use(("node_name",), on_module=False)
    config.set_timing_cache(c, ignore_mismatch=False) -> also Use(("set_timing_cache", "ignore_mismatch"), False)

Names reached through `getattr(obj, variable)` (the build plan's flags) are not visible here:
the test checks those per version through `choose_build_plan`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

MODULE_NAMES = frozenset({"trt"})
IMPORTERS = frozenset({"import_tensorrt"})


@dataclass(frozen=True)
class Use:
    chain: tuple[str, ...]
    on_module: bool  # rooted at the tensorrt module itself, not at an object it made
    where: str  # file:line

    def __str__(self) -> str:
        return ("trt." if self.on_module else "<trt object>.") + ".".join(self.chain) + f"  ({self.where})"


def _key(node: ast.AST) -> str | None:
    """'x' for a name, 'self.x' for an attribute of self; None otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


def _root(node: ast.AST) -> tuple[str | None, list[str]]:
    """(key of the chain's root, attribute names after it) through attributes, calls and subscripts."""
    attrs: list[str] = []
    while (key := _key(node)) is None:
        if isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return None, []
    return key, attrs[::-1]


def _is_import(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IMPORTERS


class _Taint:
    """Which keys hold the module and which hold TensorRT objects: locals per function, `self.`
    attributes shared by the module's methods; through the module's own calls, into parameters
    and out of return values."""

    def __init__(self, tree: ast.Module) -> None:
        self.functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        self.by_name = {f.name: f for f in self.functions}
        self.shared: tuple[set[str], set[str]] = ({"self._trt"}, set())  # (module keys, object keys) of self
        self.local = {id(f): (set(MODULE_NAMES), set()) for f in self.functions}
        self.returns: dict[int, tuple[str | None, ...]] = {}  # function -> kind of each returned item

    def _sets(self, fn: ast.AST, key: str) -> tuple[set[str], set[str]]:
        return self.shared if key.startswith("self.") else self.local[id(fn)]

    def callee(self, node: ast.AST) -> tuple[ast.FunctionDef | None, int]:
        """(the module's function a call calls, how many leading parameters the call skips: self)."""
        if not isinstance(node, ast.Call):
            return None, 0
        if isinstance(node.func, ast.Name):
            return self.by_name.get(node.func.id), 0
        if _key(node.func) is not None and _key(node.func).startswith("self."):
            return self.by_name.get(node.func.attr), 1
        return None, 0

    def kind(self, fn: ast.AST, node: ast.AST) -> str | None:
        """'module', 'object' or None for the value of expression `node` inside `fn`."""
        if _is_import(node):
            return "module"
        callee, _ = self.callee(node)
        if callee is not None:
            kinds = self.returns.get(id(callee), ())
            return kinds[0] if len(kinds) == 1 else None
        key, attrs = _root(node)
        if key is None:
            return None
        modules, objects = self._sets(fn, key)
        if key in modules:
            return "module" if not attrs and not isinstance(node, ast.Call) else "object"
        return "object" if key in objects else None

    def _mark(self, fn: ast.AST, key: str | None, kind: str | None) -> bool:
        if key is None or kind is None:
            return False
        modules, objects = self._sets(fn, key)
        keys = modules if kind == "module" else objects
        if key in keys:
            return False
        keys.add(key)
        return True

    def _assign(self, fn: ast.AST, target: ast.AST, value: ast.AST) -> bool:
        if isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, (ast.Tuple, ast.List)):
                return any([self._assign(fn, t, v) for t, v in zip(target.elts, value.elts)])
            callee, _ = self.callee(value)
            kinds = self.returns.get(id(callee), ()) if callee is not None else ()
            return any([self._mark(fn, _key(t), k) for t, k in zip(target.elts, kinds)])
        return self._mark(fn, _key(target), self.kind(fn, value))

    def _call(self, fn: ast.AST, call: ast.Call) -> bool:
        """Taint the parameters of a module function that receive TensorRT values."""
        callee, skip = self.callee(call)
        if callee is None:
            return False
        params = [a.arg for a in callee.args.posonlyargs + callee.args.args][skip:]
        pairs = list(zip(params, call.args)) + [(k.arg, k.value) for k in call.keywords if k.arg]
        return any([self._mark(callee, p, self.kind(fn, v)) for p, v in pairs])

    def _return(self, fn: ast.AST, node: ast.Return) -> bool:
        if node.value is None:
            return False
        items = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        kinds = tuple(self.kind(fn, v) for v in items)
        old = self.returns.get(id(fn))
        new = kinds if old is None else tuple(a or b for a, b in zip(old, kinds))
        self.returns[id(fn)] = new
        return new != old

    def propagate(self) -> None:
        """Taint keys until nothing changes (functions may come in any order)."""
        changed = True
        while changed:
            changed = False
            for fn in self.functions:
                for node in ast.walk(fn):
                    if isinstance(node, ast.Assign):
                        for target in node.targets:
                            changed |= self._assign(fn, target, node.value)
                    elif isinstance(node, ast.AnnAssign) and node.value is not None:
                        changed |= self._assign(fn, node.target, node.value)
                    elif isinstance(node, ast.Call):
                        changed |= self._call(fn, node)
                    elif isinstance(node, ast.Return):
                        changed |= self._return(fn, node)


def _uses_in(taint: _Taint, fn: ast.AST, where: str) -> list[Use]:
    inner = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.Attribute):
            inner.add(id(n.value))
        elif isinstance(n, ast.Call):
            inner.add(id(n.func))
    out = []
    for node in ast.walk(fn):
        chain_end = None
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain_end = node
        elif isinstance(node, (ast.Call, ast.Subscript)) and id(node) not in inner:
            chain_end = node  # a chain ending in a call: trt.Builder(logger), network.get_input(i)
        if chain_end is not None:
            key, attrs = _root(chain_end)
            kind = None if key is None else taint.kind(fn, ast.Name(id=key) if not key.startswith("self.") else
                                                       ast.Attribute(value=ast.Name(id="self"), attr=key[5:]))
            if kind is not None and attrs:
                out.append(Use(tuple(attrs), kind == "module", f"{where}:{node.lineno}"))
                if isinstance(node, ast.Call):  # keyword names are pybind11 argument names
                    out.extend(Use((attrs[-1], k.arg), False, f"{where}:{node.lineno}") for k in node.keywords if k.arg)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            kind = taint.kind(fn, node.args[0])
            if kind is not None:
                out.append(Use(tuple(_root(node.args[0])[1]) + (node.args[1].value,), kind == "module",
                               f"{where}:{node.lineno}"))
    return out


def collect_uses(path: Path) -> list[Use]:
    """Every TensorRT attribute chain used in the Python file `path` (self's own attributes, such
    as `self._engine`, are ours: the chain starts after them)."""
    taint = _Taint(ast.parse(path.read_text(), filename=str(path)))
    taint.propagate()
    uses = {u for fn in taint.functions for u in _uses_in(taint, fn, path.name)}
    return sorted(uses, key=lambda u: (u.where, u.chain))

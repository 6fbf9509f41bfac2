"""Checks that the stub ram_infer/_sensor.pyi and the compiled module name the same things with the same parameters.

The stub is read with ``ast`` next to the imported package, so an installed wheel is checked against the stub it ships.
pybind11 writes each function's signature as the first line of its docstring, which is Python syntax, so ``ast`` reads
the module's side too; annotations differ by design (the stub's are the readable ones), names and defaults must not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ram_infer

_sensor = pytest.importorskip("ram_infer._sensor", reason="the compiled sensor is not built")

STUB = ast.parse((Path(ram_infer.__file__).parent / "_sensor.pyi").read_text(encoding="utf-8"))
# Only builds with the CUDA sensor define these (the binding's #if RAM_INFER_WITH_CUDA).
CUDA_ONLY = {"extract_glimpses_cuda"}
NO_DEFAULT = "<no default>"


def stub_names() -> set[str]:
    """Public names the stub defines at top level (functions and annotated or assigned variables)."""
    names = set()
    for node in STUB.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return {name for name in names if not name.startswith("_")}


def parameters(function: ast.FunctionDef) -> list[tuple[str, object]]:
    """(name, default) of each parameter in order; the default is the literal value, or NO_DEFAULT."""
    args = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
    defaults = [NO_DEFAULT] * (len(function.args.posonlyargs + function.args.args) - len(function.args.defaults))
    defaults += [ast.literal_eval(d) for d in function.args.defaults]
    defaults += [NO_DEFAULT if d is None else ast.literal_eval(d) for d in function.args.kw_defaults]
    return list(zip([a.arg for a in args], defaults, strict=True))


def stub_function(name: str) -> ast.FunctionDef:
    return next(node for node in STUB.body if isinstance(node, ast.FunctionDef) and node.name == name)


def module_function(name: str) -> ast.FunctionDef:
    """The signature pybind11 put on the first line of the function's docstring, parsed as a ``def``."""
    signature = getattr(_sensor, name).__doc__.splitlines()[0]
    return ast.parse(f"def {signature}: ...").body[0]


def test_stub_names_match_module():
    expected = stub_names() if _sensor.built_with_cuda else stub_names() - CUDA_ONLY
    assert {name for name in dir(_sensor) if not name.startswith("_")} == expected


@pytest.mark.parametrize("name", sorted(node.name for node in STUB.body if isinstance(node, ast.FunctionDef)))
def test_stub_parameters_match_module(name):
    if name in CUDA_ONLY and not _sensor.built_with_cuda:
        pytest.skip(f"{name} exists only in CUDA builds")
    assert parameters(stub_function(name)) == parameters(module_function(name))


def test_stub_documents_build_dependent_names():
    docstring = ast.get_docstring(STUB)
    assert all(name in docstring for name in CUDA_ONLY)

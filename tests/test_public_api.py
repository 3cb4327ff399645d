"""The public API: every exported name exists, is documented, and nothing private leaks.

The docstring checks read the docstrings' sections (Google style, as optax writes them):
every parameter of a public factory is documented under ``Args:``, every factory says what it
returns, methods state their update rule (``.. math::``) and cite their paper (an arXiv or DOI
link under ``References:``), compressors state their bits and their class (ω or α).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

import jaxdist

MODULES = [
    jaxdist,
    jaxdist.compressors,
    jaxdist.comm,
    jaxdist.methods,
    jaxdist.problems,
    jaxdist.experiments,
    jaxdist.theory,
]


def _exported(module):
    return [(module.__name__, name) for name in module.__all__]


def _section(doc: str, title: str) -> str:
    """The text of a Google-style section (``Args:``, ``Returns:``, ...), or ''."""
    match = re.search(rf"^{title}:\s*\n(.*?)(?=^\S[^\n]*:\s*$|\Z)", doc, re.S | re.M)
    return match.group(1) if match else ""


def _documented_args(doc: str) -> set[str]:
    args = _section(doc, "Args")
    return set(re.findall(r"^\s{2}\*{0,2}(\w+)[ :(]", args, re.M))


def _parameters(obj) -> list[str]:
    return [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_module_documented_and_all_resolves(module):
    assert module.__doc__ and module.__doc__.strip()
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"
        assert not name.startswith("_") or name == "__version__"


@pytest.mark.parametrize(
    "module_name,name", [item for m in MODULES for item in _exported(m)], ids=lambda x: str(x)
)
def test_every_public_callable_has_a_docstring(module_name, name):
    obj = getattr(__import__(module_name, fromlist=["_"]), name)
    if inspect.ismodule(obj) or not callable(obj):
        return
    doc = inspect.getdoc(obj)
    assert doc and len(doc.strip()) > 20, f"{module_name}.{name} needs a docstring"


def _factories(module, exclude=()):
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj) and name not in exclude:
            yield name, obj


def test_compressor_factories_document_args_bits_class_and_returns():
    import jaxdist.compressors as jc

    names = getattr(jc, "FACTORIES", None) or [n for n, _ in _factories(jc)]
    assert "rand_k" in names and "payload_bits" not in names
    for name in names:
        obj = getattr(jc, name)
        doc = inspect.getdoc(obj)
        missing = set(_parameters(obj)) - _documented_args(doc)
        assert not missing, f"compressors.{name}: parameters {sorted(missing)} not under Args:"
        assert _section(doc, "Returns"), f"compressors.{name}: no Returns: section"
        assert re.search(r"\bbits?\b", doc, re.I), f"compressors.{name}: must state its bits"
        assert re.search(r"ω|omega|α|alpha|unbiased|contractive|biased", doc), (
            f"compressors.{name}: must state its class (unbiased with ω, contractive with α)"
        )


METHOD_FACTORIES = (
    "dgd",
    "dcgd",
    "diana",
    "ef14",
    "ef21",
    "ef21_p",
    "marina",
    "nesterov",
    "local_gd",
    "local_sgd",
    "fedavg",
    "scaffnew",
    "fedprox",
    "scaffold",
    "fedpaq",
    "bregman_gd",
    "dane",
    "aeg_sliding",
    "olga",
)


@pytest.mark.parametrize("name", METHOD_FACTORIES)
def test_method_docstrings_state_the_rule_the_args_and_the_paper(name):
    obj = getattr(jaxdist.methods, name)
    doc = inspect.getdoc(obj)
    missing = set(_parameters(obj)) - _documented_args(doc)
    assert not missing, f"methods.{name}: parameters {sorted(missing)} not under Args:"
    assert _section(doc, "Returns"), f"methods.{name}: no Returns: section"
    assert ".. math::" in doc, f"methods.{name}: state the update rule in maths"
    assert "THEORY.md" in doc, f"methods.{name}: say which THEORY.md section gives the theory"
    if name != "dgd":  # plain distributed GD needs no citation
        refs = _section(doc, "References")
        assert re.search(r"arxiv\.org/abs/\d{4}\.\d{4,5}|doi\.org", refs), (
            f"methods.{name}: cite the paper with an arXiv or DOI link under References:"
        )


def test_methods_reexported_at_top_level():
    for name in (*METHOD_FACTORIES, "apply_if_finite", "accumulate", "as_round", "RoundMethod"):
        assert getattr(jaxdist, name) is getattr(jaxdist.methods, name)
    assert not hasattr(jaxdist, "bidirectional")  # one way to say it: dcgd(c, down=...)


def test_import_jaxdist_does_not_import_jax():
    """The top level is lazy, so the CLI can parse its arguments before JAX starts."""
    code = "import sys, jaxdist; print('jax' in sys.modules, jaxdist.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
    assert out.stdout.split()[1] == jaxdist.__version__

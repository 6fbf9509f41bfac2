"""The README and docs/ against the code: generated blocks current, links inside the repository, settings and keys real.

The repository root is found from this file's path, not the working directory or the imported package, because CI
tests the installed package (PYTHONSAFEPATH=1) while the README lives in the checkout.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 150
# Markdown links and images, [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
# References to the design notes that once lived outside the repository. Spelled in pieces so that this file, which
# is scanned too, does not match itself.
OUTSIDE_REFERENCES = ("DESIGN" + ".md", "../" + "shared", "shared" + "/")


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_readme", ROOT / "docs" / "make_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_readme = _load_generator()


def _block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    blocks = {match.group("name"): match.group("body") for match in make_readme.BLOCK.finditer(text)}
    assert name in blocks, f"README.md has no <!-- begin: {name} --> block"
    return blocks[name]


def _assert_current(name: str, generated: str) -> None:
    shown = _block(name)
    diff = "".join(difflib.unified_diff(shown.splitlines(keepends=True), generated.splitlines(keepends=True),
                                        "README.md", "generated"))
    assert shown == generated, f"README.md's {name} block is stale; run `python docs/make_readme.py`:\n{diff}"


def test_example_output_is_what_ram_infer_prints():
    _assert_current("example", make_readme.example_block())


def test_own_images_output_is_what_ram_infer_prints():
    _assert_current("own-images", make_readme.own_images_block())


def test_model_table_is_generated_from_the_bundled_models():
    pytest.importorskip("torch")  # the published errors live in training/card.py, which imports torch
    _assert_current("models", make_readme.models_block())


def test_elision_keeps_the_first_location_only():
    line = '{"file": "a.png", "locations": [[0.0, 0.0], [0.1, -0.2], [0.3, 0.4]], "glimpses_used": 3}'
    assert make_readme.elide_locations(line) == '{"file": "a.png", "locations": [[0.0, 0.0], ...], "glimpses_used": 3}'


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {MAX_README_LINES})"


def _links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))  # code blocks hold code, not links
    return LINK.findall(text)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(path):
    broken = []
    for target in _links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        resolved = (path.parent / target.split("#")[0]).resolve()
        if target.startswith("/") or not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links that do not resolve inside the repository: {broken}"


def test_readme_links_only_inside_the_repository():
    outside = [target for target in _links(README) if re.match(r"[a-z][a-z0-9+.-]*:", target)]
    assert not outside, f"README.md links outside the repository: {outside}"


def _repository_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    # Tracked files, and new ones not yet added that git does not ignore.
    result = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"git ls-files failed: {result.stderr.decode(errors='replace').strip()}")
    listed = result.stdout.decode().split("\0")
    return [ROOT / name for name in sorted(set(listed)) if name and (ROOT / name).is_file()]


def test_no_reference_points_outside_the_repository():
    hits = []
    for path in _repository_files():
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary: models, pictures
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if any(reference in line for reference in OUTSIDE_REFERENCES):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "the design notes are docs/design.md; these point elsewhere:\n" + "\n".join(hits)


def test_readme_options_exist():
    """Every option that the README's Use section names is one that ram-infer has."""
    use = README.read_text(encoding="utf-8").split("\n## Use\n", 1)[1].split("\n## ", 1)[0]
    help_text = make_readme.run_cli("--help")
    mentioned = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-r)(?![\w-])", use))
    missing = sorted(option for option in mentioned if not re.search(rf"(?<![\w-]){option}(?![\w-])", help_text))
    assert not missing, f"README.md mentions options that ram-infer --help does not list: {missing}"


def _settings_rows() -> list[tuple[str, str]]:
    """(key, default) of each row of docs/training.md's settings table, as a user types them (``key=default``)."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.partition("\n## Settings\n")[2].split("\n## ", 1)[0]
    return re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", section, re.MULTILINE)


def test_settings_table_has_rows():
    assert len(_settings_rows()) >= 20


@pytest.mark.parametrize("key, default", _settings_rows())
def test_documented_setting_exists_with_its_default(key, default):
    """Overriding a documented setting with its documented default must be accepted and change nothing."""
    config = pytest.importorskip("training.config")
    assert config.apply_overrides(config.TrainConfig(), [f"{key}={default}"]) == config.TrainConfig()


def test_every_setting_is_documented():
    config = pytest.importorskip("training.config")
    fields = [f.name for f in dataclasses.fields(config.TrainConfig) if f.name != "model"]
    fields += [f"model.{f.name}" for f in dataclasses.fields(config.ModelConfig)]
    documented = {key for key, _ in _settings_rows()}
    assert [name for name in fields if name not in documented] == [], "add them to docs/training.md's settings table"


def test_design_notes_name_every_metadata_key_and_step_port():
    from ram_infer import metadata

    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    names = [f"`{metadata.PREFIX}{key}`" for key in metadata.KEYS] + [f"`{metadata.GRAPH_KEY}`"]
    names += [f"`{port}`" for port in metadata.STEP_INPUTS + metadata.STEP_OUTPUTS]
    assert [name for name in names if name not in text] == []

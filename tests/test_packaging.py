"""pyproject.toml's ranges against requirements.txt's lock, the console entry points, and the one-line error of a
config that needs an extra which is not installed.

pyproject.toml says which versions the code works with (what `pip install lowbit` may pick, or keep from the user's
environment); requirements.txt is the exact set `make venv` installs. The lock must be one point inside the ranges,
and both must name the same packages, or `make test` tests an environment no user can get.
"""
import importlib
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = canonicalize_name(PROJECT["name"])


def lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # one exact pin per line
        assert spec.operator == "==", f"requirements.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def declared() -> list[tuple[str, Requirement]]:
    """(where, requirement) for every core dependency and every extra's package, self-references left out."""
    out = [("dependencies", Requirement(r)) for r in PROJECT["dependencies"]]
    for extra, reqs in PROJECT["optional-dependencies"].items():
        out += [(f"[{extra}]", Requirement(r)) for r in reqs if canonicalize_name(Requirement(r).name) != NAME]
    return out


@pytest.mark.parametrize("where,req", declared(), ids=lambda x: str(x))
def test_every_declared_package_is_pinned_inside_its_range(where, req):
    pins = lock()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req} ({where}) has no pin in requirements.txt"
    assert req.specifier.contains(pins[name], prereleases=True), \
        f"requirements.txt pins {name}=={pins[name]}, outside {where}'s range {req}"


def test_the_lock_pins_only_declared_packages():
    undeclared = set(lock()) - {canonicalize_name(req.name) for _, req in declared()}
    assert not undeclared, f"requirements.txt pins {sorted(undeclared)}, which pyproject.toml does not name"


def test_all_extra_is_every_other_extra():
    extras = PROJECT["optional-dependencies"]
    (everything,) = [Requirement(r) for r in extras["all"]]
    assert canonicalize_name(everything.name) == NAME
    assert everything.extras == set(extras) - {"all"}


def test_license_file_is_declared_and_present():
    assert PROJECT["license"] == "MIT"
    for name in PROJECT["license-files"]:
        assert (ROOT / name).is_file(), f"license file {name} is missing"


@pytest.mark.parametrize("script,target", sorted(PROJECT["scripts"].items()))
def test_entry_point_targets_import_and_are_callable(script, target):
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr)), f"{script} = {target!r} is not callable"


@pytest.mark.parametrize("target,missing,extra", [
    ("tasks.detection.DetectionTask", "torchmetrics", "detection"),
    ("tasks.detection.DetectionTask", "pycocotools", "detection"),
    ("tasks.super_resolution.SuperResolutionTask", "torchmetrics", "sr"),
    ("data.sr_skimage.build", "skimage", "sr"),
])
def test_a_config_needing_a_missing_extra_is_one_line_naming_it(monkeypatch, target, missing, extra):
    from omegaconf import OmegaConf

    import assemble

    for name in [m for m in sys.modules if m == missing or m.startswith(missing + ".")] + [missing]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: `import name` fails as if absent
    module = target.rsplit(".", 1)[0]
    monkeypatch.delitem(sys.modules, module, raising=False)  # imported afresh by Hydra ...
    package, _, child = module.rpartition(".")
    if package in sys.modules:  # ... which finds a module imported earlier as its package's attribute first
        monkeypatch.delattr(sys.modules[package], child, raising=False)
    with pytest.raises(assemble.ConfigError) as err:
        assemble.build(OmegaConf.create({"_target_": target}))
    assert f"needs {missing}, which is not installed" in str(err.value)
    assert str(err.value).endswith(f"[{extra}]'") and "\n" not in str(err.value)

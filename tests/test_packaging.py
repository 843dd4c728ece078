"""What a wheel carries besides code: the license pyproject names, PEP 561's py.typed, and one version."""

import re
import tomllib
from importlib import resources
from pathlib import Path

import aigc_engine

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_license_file_is_the_one_pyproject_names():
    assert PYPROJECT["license"] == "Apache-2.0"
    assert PYPROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert re.search(r"Apache License\s+Version 2.0, January 2004", text)
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_the_package_is_marked_typed():
    assert (ROOT / "aigc_engine" / "py.typed").is_file()
    assert resources.files("aigc_engine").joinpath("py.typed").is_file()  # the installed copy has it too


def test_one_version():
    assert aigc_engine.__version__ == PYPROJECT["version"]

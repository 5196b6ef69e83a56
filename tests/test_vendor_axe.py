"""Guards for axe-core, vendored for the browser tests only (tests/browser/vendor/axe-core).

Like static/vendor/htmx, the files are byte-for-byte copies from the npm tarball written by
update.sh with MANIFEST.json; these offline tests compare the disk with the manifest, and
check that the audit script never becomes something Relay serves to people.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENDOR_DIR = ROOT / "tests" / "browser" / "vendor" / "axe-core"
MANIFEST = json.loads((VENDOR_DIR / "MANIFEST.json").read_text(encoding="utf-8"))["files"]
NOT_VENDORED = {"MANIFEST.json", "update.sh"}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_vendored_axe_file_matches_manifest_sha256(name):
    path = VENDOR_DIR / name
    assert path.is_file(), f"{name} is in MANIFEST.json but missing on disk"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MANIFEST[name]["sha256"], (
        f"{name} differs from what the npm package holds; re-run update.sh")


def test_manifest_records_one_pinned_axe_core_with_script_and_licence():
    assert {e["package"] for e in MANIFEST.values()} == {"axe-core"}
    assert len({(e["version"], e["integrity"]) for e in MANIFEST.values()}) == 1
    assert MANIFEST["axe.min.js"]["path"] == "package/axe.min.js"
    assert MANIFEST["LICENSE.axe-core"]["path"] == "package/LICENSE"
    for entry in MANIFEST.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"])
        assert entry["integrity"].startswith("sha512-")


def test_no_unrecorded_files_in_the_axe_vendor_dir():
    on_disk = {p.name for p in VENDOR_DIR.iterdir()} - NOT_VENDORED
    assert on_disk == set(MANIFEST)


def test_update_script_pin_matches_manifest():
    script = (VENDOR_DIR / "update.sh").read_text(encoding="utf-8")
    entry = MANIFEST["axe.min.js"]
    assert re.search(rf"^axe-core\s+{re.escape(entry['version'])}\s+"
                     rf"{re.escape(entry['integrity'])}$", script, re.MULTILINE)
    assert os.access(VENDOR_DIR / "update.sh", os.X_OK)


def test_axe_licence_is_mpl_2_and_the_script_names_its_version():
    assert "Mozilla Public License, version 2.0" in (VENDOR_DIR / "LICENSE.axe-core").read_text(
        encoding="utf-8")
    head = (VENDOR_DIR / "axe.min.js").read_text(encoding="utf-8")[:200]
    assert f"axe v{MANIFEST['axe.min.js']['version']}" in head


def test_axe_is_never_served_to_people():
    served = [p for p in (ROOT / "static").rglob("*") if "axe" in p.name.lower()]
    assert not served, f"axe-core is for tests only: {served}"
    templates = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "templates").glob("*"))
    assert "axe" not in templates.lower()

"""Guards for the vendored htmx 2 + SSE/WS extensions in static/vendor/htmx.

The files are copied byte-for-byte from the npm tarballs by
static/vendor/htmx/update.sh, which also writes MANIFEST.json. These tests run
offline: they only compare what is on disk with what the manifest recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

VENDOR_DIR = Path(__file__).resolve().parents[1] / "static" / "vendor" / "htmx"
MANIFEST_PATH = VENDOR_DIR / "MANIFEST.json"
UPDATE_SCRIPT = VENDOR_DIR / "update.sh"

# Files in the vendor dir that are ours, not copied from a tarball.
NOT_VENDORED = {"MANIFEST.json", "update.sh"}

# The packages Relay depends on and the file each must contribute.
EXPECTED_PACKAGES = {"htmx.org", "htmx-ext-sse", "htmx-ext-ws"}
EXPECTED_SCRIPTS = {
    "htmx.min.js": "htmx.org",
    "sse.min.js": "htmx-ext-sse",
    "ws.min.js": "htmx-ext-ws",
}

# All three packages are BSD Zero Clause (SPDX 0BSD). htmx.org's LICENSE is
# headed "Zero-Clause BSD", the extensions' "BSD Zero Clause License". If an
# update changes a licence this fails, so the change gets a human review.
ZERO_CLAUSE_BSD = re.compile(r"zero[- ]clause bsd|bsd zero[- ]clause", re.IGNORECASE)
EXPECTED_LICENCES = dict.fromkeys(EXPECTED_PACKAGES, ZERO_CLAUSE_BSD)


def _load_manifest() -> dict:
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))


def _manifest_files() -> dict[str, dict]:
    return _load_manifest()["files"]


def _packages() -> dict[str, dict]:
    """package name -> {"version", "integrity"}, as recorded in the manifest."""
    packages: dict[str, dict] = {}
    for entry in _manifest_files().values():
        packages.setdefault(entry["package"], entry)
    return packages


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_lists_every_pinned_package_and_script():
    files = _manifest_files()
    assert set(_packages()) == EXPECTED_PACKAGES
    for name, package in EXPECTED_SCRIPTS.items():
        assert name in files, f"{name} missing from MANIFEST.json"
        assert files[name]["package"] == package


@pytest.mark.parametrize("name", sorted(_manifest_files()))
def test_vendored_file_exists_and_matches_manifest_sha256(name):
    entry = _manifest_files()[name]
    path = VENDOR_DIR / name
    assert path.is_file(), f"{name} is in MANIFEST.json but missing on disk"
    assert _sha256(path) == entry["sha256"], (
        f"{name} differs from {entry['package']}@{entry['version']}:{entry['path']}; "
        "vendored files must stay byte-for-byte as published (re-run update.sh)"
    )


def test_manifest_entries_record_package_version_path_and_integrity():
    for name, entry in _manifest_files().items():
        assert set(entry) == {"package", "version", "path", "sha256", "integrity"}, name
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), name
        assert entry["path"].startswith("package/"), name
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), name
        prefix, _, digest = entry["integrity"].partition("-")
        assert prefix == "sha512", name
        assert len(base64.b64decode(digest, validate=True)) == 64, name


def test_files_from_one_package_share_one_version_and_tarball_integrity():
    seen: dict[str, tuple[str, str]] = {}
    for name, entry in _manifest_files().items():
        pin = (entry["version"], entry["integrity"])
        assert seen.setdefault(entry["package"], pin) == pin, (
            f"{name} disagrees with other {entry['package']} files on version/integrity"
        )


def test_no_unrecorded_files_in_vendor_dir():
    on_disk = {p.name for p in VENDOR_DIR.iterdir()} - NOT_VENDORED
    assert on_disk == set(_manifest_files()), "every vendored file must be in MANIFEST.json"


@pytest.mark.parametrize("package", sorted(EXPECTED_PACKAGES))
def test_every_package_ships_its_licence_file(package):
    name = f"LICENSE.{package}"
    entry = _manifest_files().get(name)
    assert entry is not None, f"{name} missing from MANIFEST.json"
    assert entry["package"] == package
    assert entry["path"] == "package/LICENSE"
    assert (VENDOR_DIR / name).is_file()


@pytest.mark.parametrize("package", sorted(EXPECTED_PACKAGES))
def test_licence_file_names_the_expected_licence(package):
    text = (VENDOR_DIR / f"LICENSE.{package}").read_text(encoding="utf-8")
    assert EXPECTED_LICENCES[package].search(text), (
        f"LICENSE.{package} no longer names the 0BSD licence; review the licence change"
    )
    assert "Permission to use, copy, modify, and/or distribute this software" in " ".join(
        text.split()
    )


def test_pinned_htmx_is_version_2_and_matches_manifest():
    source = (VENDOR_DIR / "htmx.min.js").read_text(encoding="utf-8")
    versions = set(re.findall(r'version:"([^"]+)"', source))
    assert len(versions) == 1, f"expected one version string in htmx.min.js, got {versions}"
    (version,) = versions
    assert version.split(".")[0] == "2", f"htmx {version} is not htmx 2.x"
    assert version == _packages()["htmx.org"]["version"]


@pytest.mark.parametrize(("name", "extension"), [("sse.min.js", "sse"), ("ws.min.js", "ws")])
def test_extensions_are_browser_builds_that_register_with_global_htmx(name, extension):
    # The packages' "main" is an ES module that imports htmx.org; a plain
    # <script> tag needs the IIFE build that calls the global htmx instead.
    source = (VENDOR_DIR / name).read_text(encoding="utf-8")
    assert f'htmx.defineExtension("{extension}"' in source
    assert not re.search(r"^\s*(import|export)\b", source, re.MULTILINE)


def test_update_script_pins_match_manifest():
    script = UPDATE_SCRIPT.read_text(encoding="utf-8")
    pins = {
        m["package"]: {"version": m["version"], "integrity": m["integrity"]}
        for m in re.finditer(
            r"^(?P<package>[\w.-]+)\s+(?P<version>\d+\.\d+\.\d+)\s+(?P<integrity>sha512-\S+)$",
            script,
            re.MULTILINE,
        )
    }
    recorded = {
        package: {"version": e["version"], "integrity": e["integrity"]}
        for package, e in _packages().items()
    }
    assert pins == recorded, "update.sh pins and MANIFEST.json disagree; re-run update.sh"


def test_update_script_is_executable():
    assert os.access(UPDATE_SCRIPT, os.X_OK)


# -- Mermaid (static/vendor/mermaid): the browser build that draws ```mermaid diagrams --------
# Loaded only inside the sandboxed diagram frame, and only on pages that show a diagram.

MERMAID_DIR = VENDOR_DIR.parent / "mermaid"
MERMAID_FILES = json.loads((MERMAID_DIR / "MANIFEST.json").read_text(encoding="utf-8"))["files"]
MERMAID_PIN = ("12.3.0", "sha512-4113TdXeLAsMruJ79OpFL5O8+LTFXhQqZ260rF3tgUmiNAtRm4Uume04I+65PRN6y"
                         "Z69J4f8rVYWW8zRk65UYw==")


@pytest.mark.parametrize("name", sorted(MERMAID_FILES))
def test_vendored_mermaid_file_matches_manifest_sha256(name):
    entry = MERMAID_FILES[name]
    path = MERMAID_DIR / name
    assert path.is_file(), f"{name} is in MANIFEST.json but missing on disk"
    assert _sha256(path) == entry["sha256"], (
        f"{name} differs from mermaid@{entry['version']}:{entry['path']}; re-run update.sh")


def test_mermaid_is_pinned_with_its_script_licence_and_no_other_file():
    assert set(MERMAID_FILES) == {"mermaid.min.js", "LICENSE.mermaid"}
    assert {p.name for p in MERMAID_DIR.iterdir()} - NOT_VENDORED == set(MERMAID_FILES)
    for name, entry in MERMAID_FILES.items():
        assert entry["package"] == "mermaid", name
        assert (entry["version"], entry["integrity"]) == MERMAID_PIN, name
    assert MERMAID_FILES["mermaid.min.js"]["path"] == "package/dist/mermaid.min.js"
    assert MERMAID_FILES["LICENSE.mermaid"]["path"] == "package/LICENSE"
    script = (MERMAID_DIR / "update.sh").read_text(encoding="utf-8")
    assert re.search(rf"^mermaid\s+{re.escape(MERMAID_PIN[0])}\s+{re.escape(MERMAID_PIN[1])}$",
                     script, re.MULTILINE), "update.sh and the pin disagree"
    assert os.access(MERMAID_DIR / "update.sh", os.X_OK)


def test_mermaid_licence_is_mit():
    text = " ".join((MERMAID_DIR / "LICENSE.mermaid").read_text(encoding="utf-8").split())
    assert text.startswith("The MIT License (MIT)")
    assert "Permission is hereby granted, free of charge" in text


def test_mermaid_is_the_pinned_browser_build_that_sets_a_global():
    source = (MERMAID_DIR / "mermaid.min.js").read_text(encoding="utf-8")
    assert f'version:"{MERMAID_PIN[0]}"' in source
    assert 'globalThis["mermaid"] =' in source[-300:]

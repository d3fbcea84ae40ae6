"""The dashboard's files as shipped: nothing loaded from elsewhere, no inline script, every module present."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crm_bulk.api.controllers.ui import STATIC_DIR, STATIC_PATH
from crm_bulk.api.docs_page import VENDOR

OWN_FILES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file() and "vendor" not in p.parts)
IMPORT = re.compile(r"""^import .* from "(\.{1,2}/[^"]+)";$""", re.MULTILINE)
URL = re.compile(r"https?://[^\s\"')]+")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.mark.parametrize("path", OWN_FILES, ids=lambda p: str(p.relative_to(STATIC_DIR)))
def test_own_files_name_no_other_origin(path: Path) -> None:
    urls = set(URL.findall(path.read_text())) - {SVG_NAMESPACE}
    assert not urls, urls


def test_the_page_has_no_inline_script_or_style() -> None:
    page = (STATIC_DIR / "index.html").read_text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.DOTALL)
    assert scripts, "the page loads its module"
    assert all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in page
    assert " style=" not in page


def test_every_module_imported_exists() -> None:
    modules = [p for p in OWN_FILES if p.suffix == ".js"]
    checked = 0
    for module in modules:
        for target in IMPORT.findall(module.read_text()):
            assert (module.parent / target).resolve().is_file(), (module.name, target)
            checked += 1
    assert checked >= 10


def test_linked_assets_exist() -> None:
    page = (STATIC_DIR / "index.html").read_text()
    for link in re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', page):
        assert (STATIC_DIR / link.removeprefix(f"{STATIC_PATH}/")).is_file(), link


@pytest.mark.parametrize("name", ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"])
def test_the_docs_ui_is_vendored_with_its_licence(name: str) -> None:
    assert (STATIC_DIR / VENDOR.removeprefix(f"{STATIC_PATH}/") / name).is_file()

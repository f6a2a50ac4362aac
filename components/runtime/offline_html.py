"""HTML reports that open without internet (air-gapped clusters are a stated target).

Great Expectations' Data Docs and `dvc plots show` load their JavaScript and CSS from CDNs
(jsDelivr, unpkg, cdnjs, ...): offline, the Data Docs tables (drawn by bootstrap-table) are
blank and DVC's Vega curves are not drawn. The same files, vendored from the npm registry,
live in web_assets/ (README.md there: versions, licences, how to update):

- `localize_data_docs(docs_dir)`, after GX's `build_data_docs`: copies them into the site's
  static/vendor/ and points every <script>/<link>/<img> at the copy;
- `dvc_plots_template()`: the HTML template .dvc/config names (`plots.html_template`), with
  Vega inlined, so the page `dvc plots show` writes is one self-contained file wherever
  `-o` puts it (a relative script path would break outside the default dvc_plots/).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).parent / "web_assets"
DVC_TEMPLATE = ASSETS / "dvc_plots.html"
VEGA = ("vega/vega.min.js", "vega/vega-lite.min.js", "vega/vega-embed.min.js")

# CDN address (without its query) -> the vendored file. The npm files are the CDN's bytes: GX's
# integrity hashes for popper and bootstrap.min.js match them (checked when vendoring).
CDN = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/popper.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    # GX asks for the 1.19.0 extension stylesheet (minified on the index, plain on pages): 1.19.1's minified
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": VEGA[0],
    "https://cdn.jsdelivr.net/npm/vega-lite@5": VEGA[1],
    "https://cdn.jsdelivr.net/npm/vega-embed@6": VEGA[2],
}
# GX's navbar logo comes from its S3 bucket; the site ships the same image
SITE_FILES = {"https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png": "static/images/logo-long.png"}

TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
REMOTE = re.compile(r'\b(src|href)="(https?://[^"]+)"')
# a file:// page fetches a crossorigin/integrity resource in CORS mode, which Chromium refuses
CORS_ATTRS = re.compile(r'\s+(?:integrity|crossorigin)="[^"]*"')


def remote_references(html: str) -> list[str]:
    """The http(s) addresses a page's <script>, <link> and <img> tags load (links a person
    clicks, <a href>, are not loads)."""
    return [m.group(2) for tag in TAG.findall(html) for m in REMOTE.finditer(tag)]


def local_references(html: str) -> list[str]:
    """The relative addresses a page's <script>, <link> and <img> tags load."""
    found = (re.search(r'\b(?:src|href)="([^"]+)"', tag) for tag in TAG.findall(html))
    return [m.group(1) for m in found if m and not re.match(r"[a-z]+:|#", m.group(1))]


def localize_data_docs(docs_dir: Path) -> list[str]:
    """Vendored copies into `docs_dir`/static/vendor/ and every page pointed at them.
    Returns the remote addresses left (none with the locked GX; a newer GX may add one,
    which tests/test_validate.py reports)."""
    vendor = docs_dir / "static" / "vendor"
    shutil.copytree(ASSETS, vendor, dirs_exist_ok=True, ignore=shutil.ignore_patterns("dvc_plots.html", "__pycache__"))
    left: set[str] = set()
    for page in docs_dir.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        page.write_text(_localize_page(html, os.path.relpath(docs_dir, page.parent), left), encoding="utf-8")
    return sorted(left)


def _localize_page(html: str, up: str, left: set[str]) -> str:
    """`html` with its CDN loads pointed at the site's copies (`up`: the page's way back to the
    site root); addresses with no copy are added to `left`."""
    def local(match: re.Match) -> str:
        url = match.group(2).split("?")[0]
        if url in CDN:
            return f'{match.group(1)}="{up}/static/vendor/{CDN[url]}"'
        if url in SITE_FILES:
            return f'{match.group(1)}="{up}/{SITE_FILES[url]}"'
        left.add(url)
        return match.group(0)

    def rewrite(tag: re.Match) -> str:
        moved = REMOTE.sub(local, tag.group(0))
        return CORS_ATTRS.sub("", moved) if moved != tag.group(0) else moved

    return TAG.sub(rewrite, html)


def dvc_plots_template() -> str:
    """DVC's page (dvc_render.html.PAGE_HTML) without its `{scripts}` placeholder, which DVC
    fills with CDN tags, and with the vendored Vega, Vega-Lite and Vega-Embed inlined."""
    scripts = "\n".join(f"<script>/* {name} (web_assets/README.md) */\n{(ASSETS / name).read_text(encoding='utf-8')}\n</script>"
                        for name in VEGA)
    return f"""<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- written by components/runtime/offline_html.py: `python -m components.runtime.offline_html` -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


if __name__ == "__main__":
    DVC_TEMPLATE.write_text(dvc_plots_template(), encoding="utf-8")
    print(f"wrote {DVC_TEMPLATE}")

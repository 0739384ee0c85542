"""DVC's plots page with its JavaScript inlined, so `dvc plots show` and `dvc plots diff` draw with no network.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN: opened offline (a GPU node, a cluster)
it stays blank. The template written here holds the three libraries as one inline script, taken from
`vl-convert-python` (pinned in pyproject.toml), which ships them bundled: a kept package with known
versions, instead of a hand-vendored copy of minified JavaScript. DVC fills `{plot_divs}` and
`{refresh_tag}`; its `{scripts}` (the CDN tags) are left out on purpose. `.dvc/config`'s
`plots.html_template` names the file (relative to `.dvc/`); `make` writes it on install.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_NAME = "offline-plots.html"
"""The template's file name in the repository's `.dvc/` folder (`.dvc/config`: `plots.html_template`)."""
VEGA_LITE_VERSION = "v5.21"
"""The Vega-Lite the page compiles with: DVC's plot templates are Vega-Lite 5 specifications."""


def offline_template() -> str:
    """The HTML template: DVC's placeholders, and Vega, Vega-Lite and Vega-Embed in one inline script."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    versions = (f"Vega {vl_convert.get_vega_version()}, Vega-Lite {VEGA_LITE_VERSION}, "
                f"Vega-Embed {vl_convert.get_vega_embed_version()}, from vl-convert-python")
    return f"""<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>LLaVAC plots</title>
    <!-- {versions}: no network needed -->
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def write_offline_template(dvc_dir: Path) -> Path:
    """Write `offline_template()` to `dvc_dir/TEMPLATE_NAME`; the path written. FileNotFoundError naming
    `dvc init` when `dvc_dir` (a repository's `.dvc/`) does not exist."""
    if not dvc_dir.is_dir():
        raise FileNotFoundError(f"{dvc_dir} is not a folder: run this in a DVC repository (its root holds .dvc/)")
    path = dvc_dir / TEMPLATE_NAME
    path.write_text(offline_template(), encoding="utf-8")
    return path

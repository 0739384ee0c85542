"""`dvc plots show` pages that draw with no network: the template (llavac.offline_plots) and a real browser."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import pytest

from helpers import REPO, run
from llavac.offline_plots import TEMPLATE_NAME, offline_template

CHROMIUM = "chromium"
INSTALL_CHROMIUM = "apt-get install -y chromium (Debian/Ubuntu; .ci/run does it)"
OFFLINE_CHROMIUM = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing leaves the machine
    "--virtual-time-budget=20000",  # let the page's scripts run to the end before the DOM is read
]


def test_the_template_inlines_the_libraries_and_keeps_dvcs_placeholders():
    template = offline_template()
    assert "{plot_divs}" in template and "{refresh_tag}" in template
    assert "{scripts}" not in template, "DVC would put its CDN <script src> tags there"
    assert not re.search(r"<script[^>]*\bsrc=", template) and "vegaEmbed" in template
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc/config")
    assert config["plots"]["html_template"] == TEMPLATE_NAME  # what `dvc plots show` reads, relative to .dvc/


@pytest.mark.slow
def test_dvc_plots_show_draws_every_plot_in_a_browser_with_no_network(reproduced, tmp_path):
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: this test opens the page in a real browser; install it: {INSTALL_CHROMIUM}")
    run(["llavac", "plots-template"], reproduced)  # what `make` does after installing
    run(["dvc", "plots", "show", "--out", str(tmp_path / "plots")], reproduced)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)
    declared = page.count("vegaEmbed('#")
    assert declared >= 10, "the confusion matrices, reliability and coverage plots and the training curves"
    dom = subprocess.run([CHROMIUM, *OFFLINE_CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          (tmp_path / "plots" / "index.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = len(re.findall(r'class="vega-embed', dom.stdout))
    assert drawn == declared, f"the browser drew {drawn} of {declared} plots"
    assert dom.stdout.count("<svg") >= declared  # vega-embed draws each plot as an SVG

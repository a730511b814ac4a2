"""The HTML report, rendered in headless Chromium: every chart must be drawn, with no network."""
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from gra_stream.cli import main
from tests.conftest import run_fake, corpus

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    run_fake([corpus("self_instruct_seed_tasks")], tmp / "run", rounds=2)
    out = tmp / "report.html"
    result = CliRunner().invoke(main, ["report", str(tmp / "run"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_report_is_self_contained(report):
    html = report.read_text()
    assert not re.search(r"""(src|href)=["']?https?://""", html), "the report must not fetch anything"
    for heading in ("Funnel", "Reviewers", "Adjudication", "Acceptance", "Cost", "Diversity"):
        assert f"<h2>{heading}</h2>" in html
    assert "adjudicator overturn rate" in html and "agreement on" in html and "round 2" in html


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_chromium_draws_every_chart(report, tmp_path):
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    charts = report.read_text().count('<svg class="chart"')
    drawn = re.search(r"<title>charts drawn: (\d+)</title>", dom)
    assert drawn and int(drawn.group(1)) == charts == 11
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1400,2600",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000, "a screenshot of drawn charts is not a blank page"


def test_long_chart_labels_are_cut_into_valid_svg_and_tell_the_models_apart():
    """Model names that share their first characters (a base model and its quantised variant) stay apart in
    the agreement heatmap's columns, and a label cut next to `&` or `<` leaves well-formed SVG."""
    import xml.etree.ElementTree as ET

    from gra_stream import svg

    names = ["qwen2.5-7b-instruct", "qwen2.5-7b-instruct-awq", "adjudicate: adjudicator_parse_error", "a<b&c " * 8]
    charts = [svg.bars("bars", names, [1, 2, 3, 4]), svg.heatmap("heat", names, [[0.5] * 4] * 4),
              svg.histograms("hist", {name: [1.0] for name in names}, lo=0, hi=10)]
    parsed = [ET.fromstring(chart) for chart in charts]
    columns = [t.text for t in parsed[1].iter("{http://www.w3.org/2000/svg}text") if "transform" in t.attrib]
    assert len(columns) == 4 and len(set(columns)) == 4, columns
    for chart in parsed:
        shown = [(t.text or "") + "".join(c.text for c in t if c.tag.endswith("title")) for t in chart.iter()
                 if t.tag.endswith("text")]
        assert all(any(name in label for label in shown) for name in names), "every whole name is in the chart"

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from bvkit.report import figures, tables
from bvkit.report.differences import split_differences_from_samples
from bvkit.report.html import Section, render_report

from report_browser import CHROMIUM, dump_dom_with_probe, screenshot

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def page(tmp_path_factory, frames):
    per_sample, per_class, per_split = frames
    diffs = split_differences_from_samples(per_sample, per_class, ["accuracy", "bias", "variance"],
                                                   "ce", bootstrap=100, seed=0)
    insights = tables.format_key_insights(tables.key_insights(diffs, "ce"))
    sections = [
        Section("Key insights", tables=[("verdicts vs ce", insights)]),
        Section("Accuracy", figures=[("accuracy - ce", figures.plot_class_difference(per_class))],
                notes=["a <note> with markup characters & such"]),
        Section("Splits", figures=[("splits", figures.plot_split_bars(per_split))]),
    ]
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report("bvkit report", sections), encoding="utf-8")
    return path


def test_page_is_self_contained_with_decodable_pngs(page):
    text = page.read_text()
    assert "http://" not in text and "https://" not in text
    assert "&lt;note&gt; with markup characters &amp; such" in text
    uris = DATA_URI.findall(text)
    assert len(uris) == 2
    for uri in uris:
        image = Image.open(io.BytesIO(base64.b64decode(uri)))
        image.verify()
        assert image.format == "PNG" and image.size[0] > 300
    assert text.count("<table") == 1 and text.count('<td class="Better">') > 0


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_page_renders_in_headless_chromium(page, tmp_path):
    dom = dump_dom_with_probe(page)
    widths = re.search(r'data-image-widths="([0-9,]*)"', dom)
    assert widths, "the page's load handler did not run"
    assert [int(w) > 0 for w in widths.group(1).split(",")] == [True, True]
    assert dom.count("<table") == 1 and "Tail Variance" in dom
    shot = screenshot(page, tmp_path / "report.png")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 10  # not a blank page
    assert (pixels < 128).mean() > 0.002  # dark text and plot lines are drawn

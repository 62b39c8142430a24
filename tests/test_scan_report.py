"""`dupstream scan --report`: a self-contained HTML page, rendered in headless Chromium."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dupstream.lab.data import edits

CLI = [sys.executable, "-m", "dupstream"]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
#: what headless Chromium needs on a closed, rootful machine (docs: scripts/setup.sh)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]
#: measures the rendered page and writes the numbers into the DOM for --dump-dom
PROBE = """<script>
window.addEventListener('load', () => {
  const out = {images: [], regions: [], groups: []};
  for (const img of document.querySelectorAll('figure.member img')) {
    const r = img.getBoundingClientRect();
    out.images.push({w: img.naturalWidth, h: img.naturalHeight, top: r.top, left: r.left,
                     shown_w: r.width});
  }
  for (const box of document.querySelectorAll('.region')) {
    const r = box.getBoundingClientRect();
    const t = box.parentElement.querySelector('img').getBoundingClientRect();
    out.regions.push({inside: r.left >= t.left - 1 && r.right <= t.right + 1 &&
                      r.top >= t.top - 1 && r.bottom <= t.bottom + 1, w: r.width, h: r.height,
                      colour: getComputedStyle(box).borderTopColor});
  }
  for (const g of document.querySelectorAll('section.group')) {
    const tops = [...g.querySelectorAll('figure.member')].map(f => f.getBoundingClientRect().top);
    out.groups.push({keeper: g.dataset.keeper, side_by_side: new Set(tops).size === 1,
                     members: tops.length});
  }
  const pre = document.createElement('pre'); pre.id = 'layout';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("rep")
    rng = np.random.default_rng(5)
    (d / "a_coffee_caption.png").write_bytes(edits.encode(edits.caption(photos["coffee"], rng)))
    (d / "a_chelsea_crop.png").write_bytes(edits.encode(edits.crop(photos["chelsea"], rng)))
    (d / "z_coffee.png").write_bytes(edits.encode(photos["coffee"]))
    (d / "z_chelsea.png").write_bytes(edits.encode(photos["chelsea"]))
    (d / "z_rocket.png").write_bytes(edits.encode(photos["rocket"]))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path_factory.mktemp("o") / "report.html"
    r = subprocess.run([*CLI, "scan", str(d), "--detector", "none", "-q", "--allow-errors",
                        "--report", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return d, out


def test_report_is_self_contained(report):
    d, out = report
    page = out.read_text()
    assert 'src="data:image/jpeg;base64,' in page
    assert not re.search(r'src="(?!data:)', page) and "http" not in page  # nothing fetched
    assert page.count('<section class="group"') == 2
    assert f'data-keeper="{d / "z_coffee.png"}"' in page
    assert f'data-keeper="{d / "z_chelsea.png"}"' in page
    assert "caption or band added at the" in page and "cropped to " in page
    assert f'data-path="{d / "broken.png"}"' in page and "image_" in page


def _chromium(*args, cwd):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={cwd / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package "
                    "'chromium'; scripts/setup.sh installs it where the registry has it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    d, out = report
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", PROBE + "</body>"))
    r = _chromium("--dump-dom", probed.as_uri(), cwd=tmp_path)
    m = re.search(r'<pre id="layout">(.*?)</pre>', r.stdout, re.S)
    assert m, (r.returncode, r.stderr[-2000:])
    layout = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(layout["images"]) == 4  # two groups of two (unique and failed files: none)
    assert all(i["w"] > 0 and i["h"] > 0 for i in layout["images"])  # data URIs decoded
    assert {g["keeper"] for g in layout["groups"]} == {str(d / "z_coffee.png"),
                                                      str(d / "z_chelsea.png")}
    assert all(g["side_by_side"] and g["members"] == 2 for g in layout["groups"])
    assert layout["regions"] and all(b["inside"] and b["w"] > 5 and b["h"] > 2
                                     for b in layout["regions"])
    shot = Path("/tmp/dupstream_scan_report.png")
    s = _chromium(f"--screenshot={shot}", "--window-size=1280,1100", out.as_uri(), cwd=tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000, s.stderr[-2000:]

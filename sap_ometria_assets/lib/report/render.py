"""Rendering the health report to one self-contained HTML file (inline CSS and SVG charts, no
scripts, nothing fetched from the internet) and keeping the last ones.

Files: `<reports dir>/latest.html` (always the newest) and one `health_<UTC time>.html` per run;
only the newest `keep` per-run files are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from sap_ometria_assets.lib.report.charts import all_charts
from sap_ometria_assets.lib.report.facts import Facts

REPORTS_KEPT = 30

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)


def render_html(facts: Facts, run_id: str | None = None) -> str:
    """The report as one HTML document."""
    return _ENV.get_template("health.html.j2").render(facts=facts, charts=all_charts(facts), run_id=run_id)


def write_report(html: str, reports_dir: Path, facts: Facts, keep: int = REPORTS_KEPT) -> Path:
    """Write this run's file and `latest.html` (atomically replaced); prune old run files."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = facts.generated_at.strftime("%Y%m%dT%H%M%S")
    run_file = reports_dir / f"health_{stamp}.html"
    run_file.write_text(html, encoding="utf-8")
    tmp = reports_dir / f".latest.{os.getpid()}.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, reports_dir / "latest.html")
    for old in sorted(reports_dir.glob("health_*.html"))[:-keep]:
        old.unlink(missing_ok=True)
    return run_file

"""The report's charts, drawn with Vega-Altair and rendered to static SVG by vl-convert, so the
page needs no JavaScript, no CDN and no internet to show them."""

from __future__ import annotations

import altair as alt
import polars as pl
import vl_convert as vlc

from sap_ometria_assets.lib.report.facts import Facts

_OWNER_COLOURS = alt.Scale(domain=["marketing", "finance", "ops"], range=["#d9480f", "#1864ab", "#5f3dc4"])


def _svg(chart: alt.TopLevelMixin) -> str:
    return vlc.vegalite_to_svg(chart.to_json())


def _trend_frame(facts: Facts) -> pl.DataFrame:
    frame = pl.DataFrame(facts.trend, schema={"run_at": pl.Datetime(time_zone="UTC"), "owner": pl.String,
                                              "open": pl.Int64, "impact": pl.Float64}, orient="row")
    return frame.group_by("run_at", "owner").agg(pl.col("open").sum(), pl.col("impact").sum()).sort("run_at")


def open_exceptions_trend(facts: Facts) -> str:
    """Open exceptions per owner over the last runs (is it getting better?)."""
    frame = _trend_frame(facts)
    return _svg(alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("run_at:T", title="sync", axis=alt.Axis(format="%d %b %H:%M")),
        y=alt.Y("open:Q", title="open exceptions"),
        color=alt.Color("owner:N", scale=_OWNER_COLOURS, title="owner"),
        tooltip=["run_at:T", "owner:N", "open:Q"],
    ).properties(width=520, height=220, title="Open exceptions over the last runs"))


def money_by_rule(facts: Facts) -> str:
    """Money at stake per rule (each bar one rule, one meaning; bars are not summed)."""
    frame = pl.DataFrame([{"rule": r.rule, "owner": r.owner, "impact": r.impact} for r in facts.rules
                          if r.impact > 0][:12],
                         schema={"rule": pl.String, "owner": pl.String, "impact": pl.Float64}, orient="row")
    return _svg(alt.Chart(frame).mark_bar().encode(
        x=alt.X("impact:Q", title=f"money at stake ({facts.currency})"),
        y=alt.Y("rule:N", sort="-x", title=None),
        color=alt.Color("owner:N", scale=_OWNER_COLOURS, title="owner"),
    ).properties(width=520, height=22 * max(len(frame), 1), title="Money at stake by rule"))


def recon_by_currency(facts: Facts) -> str:
    """Net revenue per currency as SAP has it, as we sent it and as Ometria holds it."""
    rows = [{"currency": r["currency"], "side": side, "net": float(r[col] or 0)}
            for r in facts.recon
            for side, col in (("SAP", "sap_net"), ("sent", "sent_net"), ("Ometria", "ometria_net"))]
    frame = pl.DataFrame(rows, schema={"currency": pl.String, "side": pl.String, "net": pl.Float64},
                         orient="row")
    return _svg(alt.Chart(frame).mark_bar().encode(
        x=alt.X("side:N", title=None, sort=["SAP", "sent", "Ometria"]),
        y=alt.Y("net:Q", title="net revenue"),
        column=alt.Column("currency:N", title="currency"),
        color=alt.Color("side:N", legend=None),
    ).properties(width=120, height=200, title="Net revenue: SAP vs sent vs Ometria"))


def all_charts(facts: Facts) -> dict[str, str]:
    """Chart name -> inline SVG; a chart without data is left out."""
    charts: dict[str, str] = {}
    if facts.trend:
        charts["trend"] = open_exceptions_trend(facts)
    if any(r.impact > 0 for r in facts.rules):
        charts["money"] = money_by_rule(facts)
    if facts.recon:
        charts["recon"] = recon_by_currency(facts)
    return charts

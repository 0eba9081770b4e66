"""The health report: one self-contained HTML page per run for marketing, finance and ops."""

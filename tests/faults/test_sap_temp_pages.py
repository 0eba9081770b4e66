"""Raw SAP pages (customer names, addresses) never sit in the shared system temp directory, and
a killed run's pages do not outlive the next run."""

from __future__ import annotations

import stat
import tempfile

from faultkit import assert_nothing_lost, run_sync

from sap_ometria_assets.lib.landing import fetch


def test_raw_pages_stay_private_and_a_killed_runs_pages_go_at_the_next_start(env, company,
                                                                            monkeypatch, tmp_path):
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    private = env.db.parent / fetch.PAGES_DIR
    leftover = private / "ocrd" / "page_0000001.json"   # a run killed mid-read left this
    leftover.parent.mkdir(parents=True)
    leftover.write_text('{"value":[{"CardCode":"C1","CardName":"Jane Doe"}]}')
    folders: list[tuple[str, int, int]] = []
    original = fetch.Fetcher.__init__

    def spy(self, client, entity_set, folder, *args, **kwargs):
        folders.append((str(folder), stat.S_IMODE(folder.stat().st_mode),
                        stat.S_IMODE(folder.parent.stat().st_mode)))
        original(self, client, entity_set, folder, *args, **kwargs)

    monkeypatch.setattr(fetch.Fetcher, "__init__", spy)
    run = run_sync()
    assert run.success, run.failures
    assert folders and all(f.startswith(str(private) + "/") for f, _, _ in folders), folders[:3]
    assert {(mode, parent) for _, mode, parent in folders} == {(0o700, 0o700)}
    assert not leftover.exists()
    assert list(private.iterdir()) == []          # nothing left after a normal run
    left = [p for p in system_tmp.rglob("*") if p.is_file()]
    assert not left, left[:5]                     # nothing ever went to the system temp dir
    assert_nothing_lost(env.db, env.ometria, company)

"""Fetching the pages of one read: a background thread (`Fetcher`) writes each Service Layer page
to a file while DuckDB parses the pages already there, in a private 0700 folder beside the
warehouse (`pages_dir`, never the shared TMPDIR: pages hold names and addresses; removed at the
end and, after a killed run, at the next start). A page DuckDB finds damaged is validated whole
by the client, fetched again and the read repeated (`read_repairing`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from sap_ometria_assets.lib.config.settings import Settings
from sap_ometria_assets.lib.landing.plan import TempNames
from sap_ometria_assets.lib.landing.results import LandResult

_log = logging.getLogger(__name__)


PAGES_DIR = ".sap_pages"


@contextmanager
def pages_dir(settings: Settings, table: str) -> Iterator[Path]:
    """A private folder (0700) for one table's raw pages (customer names, addresses) beside the
    warehouse, never the shared system temp dir. A folder a killed run left behind is removed
    first; the folder goes at the end of the landing, whatever happened."""
    root = settings.duckdb_path.parent / PAGES_DIR
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    folder = root / table
    if folder.exists():
        _log.warning("%s: removing raw pages a killed run left in %s", table, folder)
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Fetcher:
    """The pages of one read, fetched by a background thread into files, so HTTP (the Service
    Layer's latency, our client's work) overlaps DuckDB parsing the pages already fetched
    (DuckDB releases the GIL while it runs). The client is used by one thread at a time: the
    fetching thread until the read ends, the caller only after `wait_all` (for `refetch`).
    A fetch error is raised in the caller at its next call; leaving the `with` block stops the
    thread (after the page in flight) before the temporary folder goes."""

    def __init__(self, client: Any, entity_set: str, folder: Path, stem: str, *,
                 select: str | None, filter: str | None, orderby: str,  # noqa: A002
                 result: LandResult | None, page_size: int | None = None,
                 max_pages: int | None = None) -> None:
        self.client = client
        self.files: list[str] = []
        self.pages: list[Any] = []   # lib/sap/paging.Page without its body, per file
        self._booleans: set[str] = set()  # files whose text holds `true` or `false` somewhere
        self._folder, self._stem, self._result = folder, stem, result
        self._args = {"select": select, "filter": filter, "orderby": orderby,
                      "page_size": page_size}
        if max_pages is not None:
            self._args["max_pages"] = max_pages
        self._entity_set = entity_set
        self._cond = threading.Condition()
        self._taken = 0
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sap-fetch-{entity_set}",
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()

    def _run(self) -> None:
        try:
            pages = self.client.pages(self._entity_set, **self._args)
            try:
                for page in pages:
                    if self._stop:
                        break
                    path = self._folder / f"{self._stem}_{page.number:07d}.json"
                    path.write_bytes(page.body)
                    booleans = _may_hold_booleans(page.body)
                    with self._cond:
                        if booleans:
                            self._booleans.add(str(path))
                        self.files.append(str(path))
                        self.pages.append(replace(page, body=b""))
                        if self._result is not None:
                            self._result.pages += 1
                            self._result.bytes_read += len(page.body)
                        self._cond.notify_all()
            finally:
                pages.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def next_batch(self, at_least: int = 1, at_most: int | None = None) -> list[str]:
        """Files not handed out yet: waits until `at_least` are there (or the read ended);
        [] once every page has been handed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._done or self._error is not None
                                or len(self.files) - self._taken >= at_least)
            if self._error is not None:
                raise self._error
            end = len(self.files) if at_most is None else min(len(self.files),
                                                              self._taken + at_most)
            batch = self.files[self._taken:end]
            self._taken = end
            return batch

    def wait_all(self) -> list[str]:
        """Every page's file, once the read has ended (raises what the fetching raised)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return list(self.files)

    def with_booleans(self, files: list[str]) -> list[str]:
        """The pages among `files` whose text holds `true` or `false` anywhere: only those can
        carry a JSON boolean (rejects.numeric_booleans scans them; most reads have none)."""
        with self._cond:
            return [f for f in files if f in self._booleans]

    def repair(self) -> int:
        """Validate every fetched page whole; fetch the damaged ones again (validated whole:
        `SapB1Error` names a page that stays damaged). Returns how many were replaced."""
        files = self.wait_all()
        repaired = 0
        for path, page in zip(files, self.pages, strict=True):
            problem = self.client.page_problem(Path(path).read_bytes())
            if not problem:
                continue
            self.client.log.warning("SAP B1 %s page %d: %s; fetching it again", page.entity_set,
                                    page.number, problem)
            body = self.client.refetch(page).body
            Path(path).write_bytes(body)
            if _may_hold_booleans(body):
                self._booleans.add(path)
            repaired += 1
        return repaired


def _may_hold_booleans(body: bytes) -> bool:
    """Cheap (a byte search, in the fetching thread) and never wrong the unsafe way: a page
    without these bytes holds no JSON boolean; one with them is scanned exactly later."""
    return b"true" in body or b"false" in body


def read_repairing(con: duckdb.DuckDBPyConnection, fetcher: Fetcher, names: TempNames,
                   read: Any) -> Any:
    """`read()` (DuckDB reading the fetched pages); when DuckDB finds a page malformed, the
    damaged pages are fetched again and the read repeated once."""
    try:
        return read()
    except duckdb.InvalidInputException as exc:
        if "Malformed JSON" not in str(exc):
            raise
        if not fetcher.repair():
            raise
        names.drop_all(con)
        return read()

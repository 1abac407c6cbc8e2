"""The Dagster UI, end to end: `dagster dev` on loopback, a run launched over GraphQL, headless Chromium.

Needs Debian's `chromium` and the `playwright` Python package (no browser download: Playwright
drives the system Chromium). Skips only when one of the two is missing.

Screenshots land in pytest's tmp_path and are copied to $FACETALK_TEST_ARTIFACTS/ui_browser
(default: <repo>/var/test-artifacts/ui_browser), which outlives the test run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance

from pipelines.check_descriptions import CHECK_DESCRIPTIONS
from pipelines.instance_config import instance_yaml
from tests.builders import write_sequence
from tests.dagster_server import (
    DagsterServer,
    asset_nodes,
    graphql,
    launch_asset_run,
    mark_community_prompt_seen,
    running_dagster_dev,
    wait_for_run,
    wait_until_ready,
)

REPO = Path(__file__).resolve().parents[1]
LOCATION = "facetalk"  # workspace.yaml's location_name
SEGMENT_CONFIG = {"ops": {"training_segments": {"config": {"segment_frames": 24, "stride": 12}}}}
N_FRAMES = 50  # -> windows at 0, 12, 24 per sequence with 24-frame segments and stride 12
EXPECTED_SEGMENTS = 3 * 3  # the broken sequence is not ingested
BROKEN = "ID3_SEN01"
BROKEN_FRAME = "nphm_tracking/nphm_expressions/frame_0003.npz"
N_PARTITIONS = 4
INGESTION_ASSETS = ["cleaned_audio", "audio_features", "nphm_expressions", "flame_vertices", "nphm_meshes"]
PAGE_TIMEOUT_MS = 60_000  # the UI's first GraphQL queries are slow on 2 cores

pytestmark = pytest.mark.slow


def _chromium_executable() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium not installed (Debian: apt-get install chromium)")


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed (pip install playwright; no `playwright install` needed)")
    return sync_playwright


def _artifacts_dir() -> Path | None:
    """Where screenshots outlive the test; None when that place cannot be written."""
    root = Path(os.environ.get("FACETALK_TEST_ARTIFACTS", REPO / "var" / "test-artifacts"))
    target = root / "ui_browser"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return target if os.access(target, os.W_OK) else None


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless system Chromium through Playwright (checked before anything slow starts)."""
    executable = _chromium_executable()
    sync_playwright = _sync_playwright()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _phase(name: str, started: float) -> None:
    print(f"[ui-browser] {name}: {time.monotonic() - started:.1f} s")  # shown with -s or on failure


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, tiny_encoder_dir) -> Iterator[DagsterServer]:
    """`dagster dev` over a fresh instance into which `facetalk ingest` put three sequences."""
    root = tmp_path_factory.mktemp("ui")
    data = root / "data"
    for identity in range(3):  # ID1 has no FLAME tracking; only ID0 has NPHM meshes
        write_sequence(
            data,
            f"ID{identity}_SEN01",
            n_frames=N_FRAMES,
            seed=identity,
            flame=identity != 1,
            nphm_meshes=identity == 0,
        )
    write_sequence(data, BROKEN, n_frames=N_FRAMES, seed=3, nphm_meshes=False)
    np.savez(data / BROKEN / BROKEN_FRAME, something_else=np.zeros(200, np.float32))  # nphm_expressions fails
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(instance_yaml())  # what `facetalk ingest` and `make ui` write
    mark_community_prompt_seen(dagster_home)
    DagsterInstance.from_config(str(dagster_home))  # the schema, before dagster dev and ingest workers race for it
    env = {
        **os.environ,
        "FACETALK_HOME": str(root / "facetalk_home"),
        "FACETALK_DATA_ROOT": str(data),
        "FACETALK_STORE": str(root / "store"),
        "FACETALK_AUDIO_ENCODER": str(tiny_encoder_dir),
        "DAGSTER_HOME": str(dagster_home),
        "PYTHONPATH": str(REPO),
        "TOKENIZERS_PARALLELISM": "false",
    }
    started = time.monotonic()
    with running_dagster_dev(REPO / "workspace.yaml", env, root / "dagster_dev.log") as dev:
        # Ingest while the server starts: both mostly import, and the instance takes both writers.
        ingest = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "ingest"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert ingest.returncode == 1, ingest.stdout + ingest.stderr  # the broken sequence
        assert "4 sequences: 3 ok, 0 unchanged, 1 failed" in ingest.stdout, ingest.stdout
        _phase("ingest (server starting alongside)", started)
        wait_until_ready(dev, LOCATION, timeout=150)
        _phase("server ready", started)
        yield dev


@pytest.fixture(scope="module")
def segments_run_id(server) -> str:
    """`training_segments` materialized through GraphQL, as the UI's Materialize button would."""
    started = time.monotonic()
    run_id = launch_asset_run(server, [["training_segments"]], SEGMENT_CONFIG, location=LOCATION)
    wait_for_run(server, run_id, timeout=180)
    _phase("training_segments run", started)
    return run_id


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if keep := _artifacts_dir():
        shutil.copy2(path, keep / path.name)
    return path


@contextmanager
def _screenshot_on_failure(page, tmp_path: Path, name: str) -> Iterator[None]:
    """Keep a picture of what the page showed when a wait or an expectation inside fails."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        yield
    except (PlaywrightTimeout, AssertionError) as error:
        shot = _screenshot(page, tmp_path, f"{name}-FAILED")
        pytest.fail(f"on {page.url}: {error}\nscreenshot: {shot}")


def _wait_for_texts(page, texts: list[str]) -> None:
    for text in texts:
        page.get_by_text(text, exact=True).first.wait_for(state="visible")


def test_catalog_lists_every_asset_and_which_were_materialized(server, segments_run_id, page, tmp_path):
    from playwright.sync_api import expect

    defined = asset_nodes(server)
    assert {*INGESTION_ASSETS, "training_segments", "facetalk_model"} <= {a.name for a in defined}
    page.goto(f"{server.url}/assets")
    with _screenshot_on_failure(page, tmp_path, "catalog"):
        _wait_for_texts(page, [a.name for a in defined])
        # Statuses load after the names. Ingest filled every partition; of the unpartitioned
        # assets only training_segments was materialized.
        partitioned = sum(a.is_partitioned for a in defined)
        never_materialized = len(defined) - partitioned - 1
        expect(page.get_by_text(f"{N_PARTITIONS} partitions", exact=True)).to_have_count(
            partitioned, timeout=PAGE_TIMEOUT_MS
        )
        expect(page.get_by_text("Never materialized", exact=True)).to_have_count(
            never_materialized, timeout=PAGE_TIMEOUT_MS
        )
        expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
    assert _screenshot(page, tmp_path, "catalog").stat().st_size > 10_000


def test_ingestion_lineage_graph_shows_per_sequence_assets_feeding_segments(server, segments_run_id, page, tmp_path):
    from playwright.sync_api import expect

    ingestion = [a.name for a in asset_nodes(server) if a.group == "ingestion"]
    assert set(INGESTION_ASSETS) <= set(ingestion)
    page.goto(f"{server.url}/locations/{LOCATION}/asset-groups/ingestion")
    with _screenshot_on_failure(page, tmp_path, "ingestion_lineage"):
        _wait_for_texts(page, [*ingestion, "training_segments"])  # training_segments: the downstream link
        # Only cleaned_audio has every partition: FLAME and meshes are absent for some sequences
        # (not counted as filled), and the broken sequence failed nphm_expressions.
        expect(page.get_by_text("100% filled", exact=True)).to_have_count(1, timeout=PAGE_TIMEOUT_MS)
    assert _screenshot(page, tmp_path, "ingestion_lineage").stat().st_size > 10_000


def test_asset_page_shows_latest_materialization_and_metadata(server, segments_run_id, page, tmp_path):
    page.goto(f"{server.url}/assets/training_segments")
    with _screenshot_on_failure(page, tmp_path, "training_segments"):
        _wait_for_texts(page, ["Latest materialization", "n_segments"])
        n_segments_row = page.locator("tr", has=page.get_by_text("n_segments", exact=True)).first
        assert n_segments_row.inner_text().split()[-1] == str(EXPECTED_SEGMENTS)
    _screenshot(page, tmp_path, "training_segments")

    page.get_by_role("tab", name="Events").click()
    with _screenshot_on_failure(page, tmp_path, "training_segments_events"):
        _wait_for_texts(page, [f"Materialized in run {segments_run_id[:8]}"])
    _screenshot(page, tmp_path, "training_segments_events")


RUNS_QUERY = """
query Runs {
  runsOrError { ... on Runs { results { runId jobName tags { key value } } } }
}
"""


def test_cli_runs_carry_the_job_name(server, segments_run_id, page, tmp_path):
    from playwright.sync_api import expect

    runs = graphql(server, RUNS_QUERY)["runsOrError"]["results"]
    from_cli = [r for r in runs if {"key": "facetalk/launched_by", "value": "facetalk"} in r["tags"]]
    assert len(from_cli) == N_PARTITIONS and {r["jobName"] for r in from_cli} == {"ingest_sequence"}
    page.goto(f"{server.url}/runs")
    with _screenshot_on_failure(page, tmp_path, "runs"):
        page.get_by_text("ingest_sequence").first.wait_for(state="visible")
        expect(page.get_by_text("__ephemeral_asset_job__")).to_have_count(0)
    _screenshot(page, tmp_path, "runs")


def test_asset_checks_are_described_and_summed_over_partitions(server, segments_run_id, page, tmp_path):
    from playwright.sync_api import expect

    page.goto(f"{server.url}/assets/nphm_expressions?view=checks")
    with _screenshot_on_failure(page, tmp_path, "nphm_expressions_checks"):
        for name in ("expression_dim", "expression_finite"):  # the page opens on the first; click each
            page.get_by_text(name, exact=True).first.click()
            page.get_by_text(CHECK_DESCRIPTIONS[name]).first.wait_for(state="visible")
            expect(page.get_by_text("No description provided")).to_have_count(0)
    _screenshot(page, tmp_path, "nphm_expressions_checks")
    # Evaluated per partition: the check's Partitions tab counts them (the broken sequence's failed).
    page.get_by_role("tab", name="Partitions").last.click()
    with _screenshot_on_failure(page, tmp_path, "nphm_expressions_check_partitions"):
        _wait_for_texts(page, ["Passed (3)", "Execution Failed (1)"])
    _screenshot(page, tmp_path, "nphm_expressions_check_partitions")


def test_absent_optional_inputs_leave_partitions_missing(server, segments_run_id, page, tmp_path):
    page.goto(f"{server.url}/assets/flame_vertices?view=partitions")
    with _screenshot_on_failure(page, tmp_path, "flame_vertices_partitions"):
        # ID0, ID2 and the broken ID3 have FLAME tracking; ID1 has none.
        _wait_for_texts(page, ["Materialized (3)", "Missing (1)"])
    _screenshot(page, tmp_path, "flame_vertices_partitions")
    page.goto(f"{server.url}/assets/nphm_meshes?view=partitions")
    with _screenshot_on_failure(page, tmp_path, "nphm_meshes_partitions"):
        _wait_for_texts(page, ["Materialized (1)", "Missing (3)"])
    _screenshot(page, tmp_path, "nphm_meshes_partitions")


def test_failed_partition_says_which_file_and_why(server, segments_run_id, page, tmp_path):
    page.goto(f"{server.url}/assets/nphm_expressions?view=partitions&partition={BROKEN}")
    with _screenshot_on_failure(page, tmp_path, "failed_partition"):
        page.get_by_text("failed, and did not materialize this asset").first.wait_for(state="visible")
    _screenshot(page, tmp_path, "failed_partition")
    # OSS Dagster keeps no "failed to materialize" event; the asset's observation for the partition
    # carries the file and the problem, one click away on the partition page (not in the run's logs).
    page.get_by_text("View all historical events (1)").click()
    with _screenshot_on_failure(page, tmp_path, "failed_partition_events"):
        page.get_by_role("dialog").get_by_text(BROKEN, exact=True).first.click()  # unfold the observation
        page.get_by_text(f"{BROKEN}/{BROKEN_FRAME}").first.wait_for(state="visible")
        page.get_by_text("problem", exact=True).first.wait_for(state="visible")
    _screenshot(page, tmp_path, "failed_partition_events")

"""Shared fixtures: the real HAM10000 from $LESION_PL_DATA (default ../shared/data) and small
real-image datasets laid out in temp folders."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LESION_PL_DATA", PROJECT.parent / "shared" / "data"))
HAM = DATA / "ham10000"
ISIC2017 = DATA / "isic2017"
# how the second archive's labels.csv is read (its README): the csv format with these columns
ISIC2017_COLUMNS = "data.columns={image: image, label: dx}"


def pytest_collection_modifyitems(items):
    """Every test that reads the real data set is marked `data`: `pytest -m "not data"` runs the unit tests,
    which need none (the end-to-end ones need $LESION_PL_DATA)."""
    for item in items:
        if {"ham_root", "isic2017_root"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests build their image caches in a temp folder, never in the user's ~/.cache."""
    old = os.environ.get("LESION_PL_CACHE")
    os.environ["LESION_PL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("LESION_PL_CACHE", None)
    else:
        os.environ["LESION_PL_CACHE"] = old


@pytest.fixture(scope="session")
def ham_root() -> Path:
    if not (HAM / "HAM10000_metadata.csv").is_file():
        pytest.fail(f"HAM10000 not found at {HAM}: set LESION_PL_DATA to the folder holding ham10000/")
    return HAM


@pytest.fixture(scope="session")
def isic2017_root() -> Path:
    if not (ISIC2017 / "labels.csv").is_file():
        pytest.fail(f"ISIC 2017 not found at {ISIC2017}: set LESION_PL_DATA to the folder holding isic2017/")
    return ISIC2017


def isic2017_slice(root: Path, dest: Path, per_class: int, seed: int = 0) -> Path:
    """`per_class` images of each of ISIC 2017's classes from each of its splits, in its own layout (labels.csv,
    images/)."""
    labels = pd.read_csv(root / "labels.csv")
    rows = labels.groupby(["split", "dx"]).sample(n=per_class, random_state=seed).reset_index(drop=True)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    for rel in rows["image"]:
        shutil.copy(root / rel, dest / rel)
    rows.to_csv(dest / "labels.csv", index=False)
    return dest


@pytest.fixture(scope="session")
def ham_meta(ham_root) -> pd.DataFrame:
    return pd.read_csv(ham_root / "HAM10000_metadata.csv")


def sample_meta(meta: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Whole lesions (all their images) from each class, about `per_class` images per class."""
    picked = []
    for _, rows in meta.groupby("dx"):
        lesions = rows["lesion_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
        take = rows[rows["lesion_id"].isin(lesions[:per_class])]
        picked.append(take)
    return pd.concat(picked).reset_index(drop=True)


@pytest.fixture(scope="session")
def unseen_meta(ham_meta, small_ham) -> pd.DataFrame:
    """HAM10000's rows of the lesions that `small_ham` (and so `trained_run`) never saw: what another source
    evaluated on that run may hold (`test` refuses images the run trained or validated on)."""
    seen = pd.read_csv(small_ham / "HAM10000_metadata.csv")["lesion_id"]
    return ham_meta[~ham_meta["lesion_id"].isin(seen)].reset_index(drop=True)


def make_dataset(ham_root: Path, meta: pd.DataFrame, dest: Path, layout: str = "flat", masks: bool = False) -> Path:
    """Copy the images of `meta` into `dest` in the flat (images/) or Kaggle (part_1/part_2) layout,
    and with `masks` their lesion masks into masks/."""
    dest.mkdir(parents=True, exist_ok=True)
    meta.to_csv(dest / "HAM10000_metadata.csv", index=False)
    for i, image_id in enumerate(meta["image_id"]):
        folder = "images" if layout == "flat" else f"HAM10000_images_part_{1 + i % 2}"
        (dest / folder).mkdir(exist_ok=True)
        shutil.copy(ham_root / "images" / f"{image_id}.jpg", dest / folder / f"{image_id}.jpg")
        if masks:
            (dest / "masks").mkdir(exist_ok=True)
            name = f"{image_id}_segmentation.png"
            shutil.copy(ham_root / "masks" / name, dest / "masks" / name)
    return dest


@pytest.fixture(scope="session")
def small_ham(ham_root, ham_meta, tmp_path_factory) -> Path:
    """About 210 real images (30 lesions per class) and their masks, flat layout (fast end-to-end runs)."""
    return make_dataset(ham_root, sample_meta(ham_meta, 30), tmp_path_factory.mktemp("small_ham"), masks=True)


FAST = ["--set", "data.image_size=48", "--set", "model.widths=[8,16,32,64]", "--set", "data.batch_size=16",
        "--set", "data.num_workers=0", "--set", "trainer.limit_train_batches=3", "--quiet"]


def invoke(*args):
    """Run the CLI in-process (typer's CliRunner); returns the result with exit_code and output."""
    from typer.testing import CliRunner

    from cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def trained_run(small_ham, tmp_path_factory) -> Path:
    """A tiny model fitted (2 epochs, few batches) and tested on real images."""
    out = tmp_path_factory.mktemp("runs") / "trained"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 2, *FAST)
    assert r.exit_code == 0, r.output
    r = invoke("test", "--run", out, "--quiet")
    assert r.exit_code == 0, r.output
    return out


def named(preds: pd.DataFrame) -> list[str]:
    """The class `test`'s predictions.csv names per image as the runtime names it: none ("") for an image outside
    what the model was trained on (its `outside` column)."""
    outside = preds["outside"] if "outside" in preds else [False] * len(preds)
    return ["" if o else p for p, o in zip(preds["pred"], outside, strict=True)]


def clinical_metadata(data_root: Path, image_ids) -> list[dict]:
    """Age, sex and site of these images from the data root's metadata CSV, as the runtime takes them."""
    meta = pd.read_csv(data_root / "HAM10000_metadata.csv").set_index("image_id").loc[list(image_ids)]
    return [{"age": r.age, "sex": r.sex, "site": r.localization} for r in meta.itertuples()]


def evaluate_copy(trained_run: Path, dest: Path, data_root: Path):
    """`test --split all` of a copy of the trained run (without its outputs) on other data."""
    shutil.copytree(trained_run, dest, ignore=shutil.ignore_patterns("test", "report", "export"))
    return invoke("test", "--run", dest, "--data-root", data_root, "--split", "all", "--quiet")


@pytest.fixture(scope="session")
def served_model(trained_run, tmp_path_factory) -> Path:
    """The trained run exported, copied out of the run (other tests re-export the run with other options)."""
    r = invoke("export", "--run", trained_run, "--quiet")
    assert r.exit_code == 0, r.output
    dest = tmp_path_factory.mktemp("served") / "model.onnx"
    shutil.copy(trained_run / "export" / "model.onnx", dest)
    return dest


@pytest.fixture(scope="module")
def browser():
    """Debian's headless chromium through chromedriver (selenium)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):  # fail, not skip: a green suite must mean the pages were checked
        pytest.fail("Debian's chromium and chromium-driver are not installed (.ci/run installs them): the report and "
                    "the pages cannot be checked in a browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1300,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    yield driver
    driver.quit()


class ServiceThread:
    """`create_app` under uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

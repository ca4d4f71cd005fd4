"""The viewer as a person uses it: ``ns-viewer`` on a tiny bts-density checkpoint, driven in headless Chromium.

Picks a source through the "source_image" control (rule "Fixed image", index 2), flies to its view with "Go to
source view", and checks that the picture changed, that the control shows the active source, that the viewer's last
render (ns-viewer logs each render's camera and source to ``BTS_STUDIO_VIEWER_LOG``) used that source from the
source camera, and that nothing warned about ImageNet weights. The pixel comparison of the canvas with the model's
render of that camera is computed and printed but not asserted (docs/viewer.md, "Known gaps").
"""

import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bts_studio.methods.common.source_selector import VIEWER_LOG_ENV

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium and chromedriver are not installed (make install runs: "
    "apt-get install chromium chromium-driver)",
)
SOURCE_INDEX = 2
MAX_RES = 160
WINDOW = (1000, 700)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def viewer_url(bts_run, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("viewer_log") / "ns-viewer.log"
    log = log_path.open("w")
    command = [str(Path(sys.executable).parent / "ns-viewer"), "--load-config", str(bts_run)]
    command += ["--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)]
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", VIEWER_LOG_ENV: str(log_path.parent / "renders.jsonl")},
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert process.poll() is None, f"ns-viewer exited with {process.returncode}; see {log.name}"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        else:
            pytest.fail(f"ns-viewer did not listen on 127.0.0.1:{port} within 300 s; see {log.name}")
        yield f"http://127.0.0.1:{port}", Path(log.name)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # WebGL without a GPU: SwiftShader, which Chromium only enables on request.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader"):
        options.add_argument(argument)
    options.add_argument("--enable-unsafe-swiftshader")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def input_for(driver, label: str):
    from selenium.webdriver.common.by import By

    # viser puts each input in a Flex row after its label (a disabled input's id differs from the label's "for").
    row = f"//label[normalize-space()='{label}']/ancestor::div[contains(@class, 'mantine-Flex-root')][1]"
    return driver.find_element(By.XPATH, row + "//input[not(@type='hidden')]")  # a slider's value is hidden


def click_button(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()


def choose_option(driver, label: str, option: str) -> None:
    from selenium.webdriver.common.by import By

    input_for(driver, label).click()
    driver.find_element(By.XPATH, f"//*[@role='option' and normalize-space()='{option}']").click()


def canvas_image(driver) -> np.ndarray:
    from PIL import Image
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.TAG_NAME, "canvas").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255.0


def settled_canvas(driver, timeout: float = 240.0) -> np.ndarray:
    """The canvas once two screenshots 5 s apart agree (the viewer renders low-res first, then full res)."""
    previous = canvas_image(driver)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(5)
        current = canvas_image(driver)
        if current.shape == previous.shape and np.abs(current - previous).mean() < 1e-3:
            return current
        previous = current
    return previous


def wait_for(predicate, timeout: float, message: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1)
    pytest.fail(message)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2) + 1e-12))


def visible_part(image: np.ndarray) -> np.ndarray:
    """The part of the canvas no overlay covers: the control panel covers its right third, the axes gizmo and
    frustum outlines sit at the borders."""
    height, width = image.shape[:2]
    return image[int(0.1 * height) : int(0.9 * height), int(0.05 * width) : int(0.55 * width)]


def test_picking_a_source_in_the_viewer_renders_the_models_view_of_it(viewer_url, browser, bts_run):
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.utils.eval_utils import eval_setup
    from PIL import Image

    url, log = viewer_url
    browser.get(url)
    wait_for(lambda: "Source rule" in browser.page_source, 180, f"no source control in the viewer page; see {log}")
    click_button(browser, "Hide Train Cams")
    max_res = input_for(browser, "Max res")  # small renders: the CPU renders the full resolution in seconds
    max_res.send_keys("\b\b\b\b" + str(MAX_RES) + "\n")
    before = settled_canvas(browser)

    choose_option(browser, "Source rule", "Fixed image")
    index_input = input_for(browser, "Source index")
    index_input.send_keys("\b\b\b" + str(SOURCE_INDEX) + "\n")
    wait_for(
        lambda: f"train #{SOURCE_INDEX}" in (input_for(browser, "Active source").get_attribute("value") or ""),
        240,
        f"the Active source field never showed train #{SOURCE_INDEX}; see {log}",
    )
    click_button(browser, "Go to source view")
    time.sleep(3)
    wait_for(lambda: f"Resolution: {MAX_RES}x" in browser.page_source, 240, f"no full-resolution render; see {log}")
    # The pose and the field of view reach the viewer in separate messages, each starting a render: wait until no
    # render has started for 10 s (ns-viewer logs each one), then until the picture is steady.
    records = log.parent / "renders.jsonl"
    quiet_since, count, deadline = time.time(), 0, time.time() + 240
    while time.time() - quiet_since < 10 and time.time() < deadline:
        time.sleep(1)
        if len(records.read_text().splitlines()) != count:
            quiet_since, count = time.time(), len(records.read_text().splitlines())
    after = settled_canvas(browser)
    assert np.abs(after - before).mean() > 0.02, "the rendered image did not change after picking a source"
    active = input_for(browser, "Active source").get_attribute("value")
    assert f"train #{SOURCE_INDEX}" in active and "requested" in active, active
    assert "training the encoder from scratch" not in log.read_text(), "ns-viewer warned about ImageNet weights"

    # The model's own render of the camera the viewer rendered last (ns-viewer appends each render's camera and
    # source to renders.jsonl), conditioned on the picked image and on another one.
    record = json.loads(records.read_text().splitlines()[-1])
    assert (record["split"], record["index"], record["rule"]) == ("train", SOURCE_INDEX, "requested"), record
    _, pipeline, _, _ = eval_setup(bts_run, test_mode="inference")
    model = pipeline.model
    c2w, _ = model.source_selector.camera_pose_and_fov("train", SOURCE_INDEX)
    offset = float((torch.tensor(record["camera_to_world"])[:, 3] - c2w[:, 3]).norm())
    print(f"viewer camera {offset:.3f} m from the source camera after 'Go to source view'")
    camera = Cameras(
        camera_to_worlds=torch.tensor(record["camera_to_world"])[None],
        **{name: record[name] for name in ("fx", "fy", "cx", "cy", "width", "height")},
    )
    renders = {
        index: model.render_camera(camera, model.source_view("train", index))["rgb"].numpy()
        for index in (SOURCE_INDEX, 0)
    }
    image = Image.fromarray((after * 255).astype(np.uint8)).resize(renders[0].shape[1::-1], Image.BILINEAR)
    shown = np.asarray(image, dtype=np.float32) / 255.0
    scores = {index: psnr(visible_part(shown), visible_part(render)) for index, render in renders.items()}
    for name, image in {"viewer": shown, **{f"model_source_{i}": r for i, r in renders.items()}}.items():
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(log.parent / f"{name}.png")
    # Not asserted yet: the canvas is 1000x506 while viser reports a 1.35 aspect to nerfstudio, and the picture as
    # shown does not line up pixel for pixel with the render (PSNR ~20 dB for either source); see docs/viewer.md.
    print(f"canvas vs the model's render of the recorded camera, PSNR per source: {scores}")
    assert all(math.isfinite(score) for score in scores.values())

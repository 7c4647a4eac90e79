"""``emotalk app`` in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``) driven by
selenium against the page served on a free local port, with the tiny checkpoints of tests/conftest.py.

One test uploads a photo and speech, picks an emotion, generates and checks that the page's ``<video>``
has a duration (the browser decoded the mp4 the pipeline wrote); the other uploads a photo without a face
and finds the CLI's one-line error on the page, after which the server still answers. Screenshots go to
the test's tmp folder (``EMOTALK_APP_SCREENSHOTS=DIR`` keeps them, e.g. for the README's docs/app.png).
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the web app's tests need Gradio: pip install -e '.[test]'")
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="the browser tests need selenium: pip install -e '.[test]'")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"),
]

WAIT_S = 60  # generous: shared CI cores; the run itself takes a few seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A face photo (Grace Hopper, downscaled), one second of speech-like audio and a photo without a face."""
    import cv2

    from emotalk.data.io.media import write_wav
    from emotalk.data.io.photos import grace_hopper_path

    folder = tmp_path_factory.mktemp("app_inputs")
    face = cv2.imread(str(grace_hopper_path()))
    photo = folder / "hopper.jpg"
    cv2.imwrite(str(photo), cv2.resize(face, (256, 300), interpolation=cv2.INTER_AREA))
    t = np.arange(16000) / 16000
    speech = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))  # voiced, syllable rate
    wav = folder / "speech.wav"
    write_wav(wav, speech.astype(np.float32), 16000)
    noface = folder / "wall.png"
    cv2.imwrite(str(noface), np.full((200, 200, 3), 180, np.uint8))
    return {"photo": photo, "speech": wav, "noface": noface}


@pytest.fixture(scope="module")
def server(tiny_checkpoints):
    from emotalk.app import Studio, build_app, launch

    studio = Studio(tiny_checkpoints, device="cpu")
    assert studio.ready, studio.problem
    blocks = build_app(studio=studio, examples=False)
    port = _free_port()
    launch(blocks, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    blocks.close()
    shutil.rmtree(studio.work_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1500", "--mute-audio", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _open(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, WAIT_S).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#generate")))


def _upload(driver, elem_id: str, path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def _pick_emotion(driver, name: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.CSS_SELECTOR, "#emotion input")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(name)
    option = WebDriverWait(driver, WAIT_S).until(  # the selected option's text starts with a check mark
        lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li") if o.text.split()[-1:] == [name]])
    option[0].click()
    WebDriverWait(driver, WAIT_S).until(lambda d: box.get_attribute("value") == name)


def _status(driver) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, "#status-text")
    return found[0].text if found else ""


def _wait_uploaded(driver, elem_id: str, what: str):
    """Gradio shows the uploaded file in the component (an <img> / an audio player) once it reached the server."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{elem_id} {what}"))


def _shot(driver, tmp_path, name):
    folder = Path(os.environ.get("EMOTALK_APP_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    driver.save_screenshot(str(path))
    return path


def test_generate_in_browser(server, browser, inputs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server)
    assert "Models:" in browser.find_element(By.CSS_SELECTOR, "#models").text
    _upload(browser, "photo", inputs["photo"])
    _wait_uploaded(browser, "photo", "img")
    _upload(browser, "speech", inputs["speech"])
    _wait_uploaded(browser, "speech", "audio, .waveform-container, [data-testid=waveform-x]")
    _pick_emotion(browser, "surprised")
    steps = browser.find_element(By.CSS_SELECTOR, "#steps input[type=number]")
    steps.clear()
    steps.send_keys("0", Keys.TAB)  # no one-shot fine-tuning: keeps the test short
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    t0 = time.perf_counter()
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#video video[src]") or _status(d).startswith("error:"))
    assert not _status(browser).startswith("error:"), _status(browser)
    duration = WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(
        "const v = document.querySelector('#video video');"
        "return v && v.readyState >= 1 && isFinite(v.duration) && v.duration > 0 ? v.duration : null;"))
    assert 0.8 < duration < 1.5, duration  # one second of speech
    assert "frames" in _status(browser) and "neural renderer" in _status(browser), _status(browser)
    assert "no one-shot" in _status(browser), _status(browser)  # the steps field reached the server
    assert browser.find_elements(By.CSS_SELECTOR, "#landmarks img"), "no landmark animation on the page"
    path = _shot(browser, tmp_path, "app_generated.png")
    assert path.stat().st_size > 10_000
    print(f"generated in the browser in {time.perf_counter() - t0:.1f} s; video {duration:.2f} s")


def test_no_face_shows_the_cli_message(server, browser, inputs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server)
    _upload(browser, "photo", inputs["noface"])
    _wait_uploaded(browser, "photo", "img")
    _upload(browser, "speech", inputs["speech"])
    _wait_uploaded(browser, "speech", "audio, .waveform-container, [data-testid=waveform-x]")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: _status(d).startswith("error:"))
    text = _status(browser)
    assert text.startswith("error: no face found in wall.png;"), text  # the upload's own name, not the server's path
    assert "\n" not in text.strip()  # the CLI's one line
    assert not browser.find_elements(By.CSS_SELECTOR, "#video video[src]")
    _shot(browser, tmp_path, "app_no_face.png")
    # the server keeps serving: the page loads again
    _open(browser, server)
    assert browser.find_element(By.CSS_SELECTOR, "#generate").is_displayed()

"""The README's MLflow screenshots, taken from a real store: `mlflow server` on it, headless Chromium at a desktop
size, one PNG per view a user judges hicra by (runs table, compare view, run page, completions page, compare report).

    python docs/screenshots/take_screenshots.py --tracking-uri sqlite:////path/mlflow.db --experiment grpo_vs_hicra

The experiment needs finished training runs and a `hicra-compare` run of them (in `<experiment>-compare`). Each page
is waited for by the text it must show, not by a sleep; the PNGs are written to --out (default: this folder).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from pathlib import Path

from hicra.browser import Browser, chromium_binary, mlflow_server

HERE = Path(__file__).resolve().parent
MAX_BYTES = 400_000  # each PNG stays small enough for a git repository and a README
ML_VIEW = "workflowType=machine_learning"  # MLflow 3 opens its GenAI view otherwise
# The browser's local storage, as a user's after a first visit: MLflow 3.17 opens its Assistant panel (a quarter of
# the window) on the first visit to a local server, and a user closes it once. The model-training view is set there
# too, for the run's sub-pages: `?workflowType=` after `.../artifactPath/x.html` leaves MLflow on "Run page loading".
BROWSER_STATE = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false",
                 "mlflow.workflowType_v1": json.dumps("machine_learning")}


def text_has(*parts: str) -> str:
    """A readiness check: the page's visible text holds every part."""
    return " && ".join(f"document.body.innerText.includes({json.dumps(p)})" for p in parts)


def nodes(browser: Browser) -> list[dict]:
    """The page's DOM nodes in document order, its frames' included: the artifact viewer shows a file in a sandboxed
    frame whose opaque origin keeps it out of the page's JavaScript, but not out of the DevTools DOM."""
    found, stack = [], [browser.call("DOM.getDocument", depth=-1, pierce=True)["root"]]
    while stack:
        node = stack.pop()
        found.append(node)
        inner = [*node.get("children", []), *node.get("shadowRoots", [])]
        inner += [node["contentDocument"]] if "contentDocument" in node else []
        stack += reversed(inner)
    return found


def page_text(browser: Browser) -> str:
    return " ".join(n["nodeValue"] for n in nodes(browser) if n.get("nodeType") == 3)  # text nodes


def scroll_to_first(browser: Browser, tag: str) -> None:
    """Scroll the first `tag` element (frames included) into view: a report's figures come after its tables."""
    node = next((n for n in nodes(browser) if n.get("nodeName") == tag), None)
    if node is None:
        raise RuntimeError(f"no <{tag.lower()}> on the page")
    browser.call("DOM.scrollIntoViewIfNeeded", nodeId=node["nodeId"])


def wait_for_text(browser: Browser, parts: tuple[str, ...], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p in page_text(browser) for p in parts):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page's frames never showed {parts}")
        time.sleep(0.5)


def runs(client, experiment: str) -> tuple[str, list, object]:
    """The experiment's id, its finished training runs by name, and the newest compare run of them."""
    exp = client.get_experiment_by_name(experiment)
    compare_exp = client.get_experiment_by_name(f"{experiment}-compare")
    if exp is None or compare_exp is None:
        raise SystemExit(f"need experiments '{experiment}' and '{experiment}-compare' (run hicra-compare first)")
    train = client.search_runs([exp.experiment_id], "tags.`hicra.run_kind` = 'train' and attributes.status = 'FINISHED'")
    compare = client.search_runs([compare_exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not train or not compare:
        raise SystemExit(f"'{experiment}' needs finished training runs and a compare run")
    return exp.experiment_id, sorted(train, key=lambda r: r.info.run_name), compare[0]


def shrink(path: Path) -> None:
    """Under MAX_BYTES: a 256-colour palette first (UI pages have few colours), then a smaller scale if need be."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    scale = 1.0
    while path.stat().st_size > MAX_BYTES and scale > 0.4:
        resized = image.resize((int(image.width * scale), int(image.height * scale)), Image.LANCZOS)
        resized.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        scale -= 0.15


def take(browser: Browser, url: str, ready: str, path: Path, settle_s: float = 1.5, frame_text: tuple = (),
         scroll_to: str | None = None) -> Path:
    """Open `url`, wait for `ready` (JavaScript) and for `frame_text` (in the page or its frames), save a PNG."""
    browser.open(url, ready=ready, timeout_s=180)
    wait_for_text(browser, frame_text)
    if scroll_to:
        scroll_to_first(browser, scroll_to)
    time.sleep(settle_s)  # charts and the frame's images draw just after their text appears
    browser.screenshot(path)
    shrink(path)
    print(f"{path.name}: {path.stat().st_size / 1000:.0f} KB  ({url})")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--size", default="1600x1000", help="browser window, WIDTHxHEIGHT (default: %(default)s)")
    args = p.parse_args(argv)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    exp_id, train, compare = runs(client, args.experiment)
    names = [r.info.run_name for r in train]
    first = train[0]
    completions = max(a.path for a in client.list_artifacts(first.info.run_id, "completions")
                      if a.path.endswith(".html"))  # the last step's page
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    # frames in the page's process, so that the DevTools DOM reaches into the artifact viewer's sandboxed frame
    browser = Browser(chromium_binary(), width=width, height=height, extra_args=("--disable-site-isolation-trials",))
    # the page itself at WIDTHxHEIGHT (the window size alone leaves a smaller viewport in headless mode)
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    try:
        with mlflow_server(args.tracking_uri, args.out / "mlflow-server.log") as ui:
            browser.open(f"{ui}/health")  # the UI's origin, for its local storage
            browser.evaluate(";".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)})"
                                      for k, v in BROWSER_STATE.items()))
            run_page = f"{ui}/#/experiments/{exp_id}/runs/{first.info.run_id}"
            query = urllib.parse.urlencode({"runs": json.dumps([r.info.run_id for r in train]),
                                            "experiments": json.dumps([exp_id]), "workflowType": "machine_learning"})
            take(browser, f"{ui}/#/experiments/{exp_id}?{ML_VIEW}", text_has(*names), args.out / "runs_table.png")
            take(browser, f"{ui}/#/compare-runs?{query}", text_has("Parallel Coordinates", "algorithm", *names),
                 args.out / "compare_view.png", settle_s=3)
            take(browser, f"{run_page}?{ML_VIEW}", text_has(first.info.run_name, "Held-out accuracy at step"),
                 args.out / "run_page.png")
            take(browser, f"{run_page}/artifactPath/{completions}", "document.querySelector('iframe') !== null",
                 args.out / "completions_page.png", frame_text=("gold", first.info.run_name))
            take(browser, f"{ui}/#/experiments/{compare.info.experiment_id}/runs/{compare.info.run_id}/artifactPath/"
                 "compare/report.html", "document.querySelector('iframe') !== null", args.out / "compare_report.png",
                 settle_s=3, frame_text=("Figures",), scroll_to="IMG")
    finally:
        browser.close()
        (args.out / "mlflow-server.log").unlink(missing_ok=True)
    if browser.errors:
        print("script errors on the pages:", *browser.errors[:10], sep="\n  ")


if __name__ == "__main__":
    main()

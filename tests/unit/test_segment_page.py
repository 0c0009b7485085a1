"""The segment page's script, run in Node.js against a stand-in page and server.

Skipped where Node.js is absent (it is only needed for this check, never to serve).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "serving" / "static" / "segments.html"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

# A page of plain objects with the ids the script reads, and a fetch that answers
# from a table of canned replies; the script's own code runs unchanged.
HARNESS = """
const elements = {};
const element = (id) => elements[id] ||= {
  id, value: "", textContent: "", innerHTML: "", selectedOptions: [],
  listeners: {}, addEventListener(kind, f) { this.listeners[kind] = f; },
};
globalThis.document = { getElementById: element };
const replies = REPLIES;
globalThis.fetch = async (path) => {
  const [status, body] = replies[path];
  return { ok: status < 400, status, text: async () => body };
};
SCRIPT
(async () => {
  await element("load").listeners.click();
  element("need").value = "study_in_taiwan";
  await element("form").listeners.submit({ preventDefault() {} });
  console.log(JSON.stringify({
    error: element("error").textContent, results: element("results").innerHTML,
  }));
})();
"""


def run_page(replies: dict[str, tuple[int, str]]) -> dict[str, str]:
    """Load the options, submit the form; the error line and the results shown."""
    script = re.search(r"<script>(.*)</script>", PAGE.read_text(), re.S).group(1)
    program = HARNESS.replace("REPLIES", json.dumps(replies)).replace("SCRIPT", script)
    done = subprocess.run(
        [NODE, "-e", program], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


OPTIONS = json.dumps(
    {
        "filters": {},
        "needs": [{"need_id": "study_in_taiwan", "label": "Study in Taiwan"}],
    }
)
PREVIEW = json.dumps(
    {
        "size": 1234,
        "reachable": 800,
        "expected_responders": 52.5,
        "need_id": "study_in_taiwan",
        "breakdowns": {},
        "histogram": [],
        "best_offers": [],
    }
)


def test_results_name_the_need_by_its_label() -> None:
    """The results once showed the need's id where its label was meant."""
    shown = run_page(
        {"/segments/options": (200, OPTIONS), "/segments/preview": (200, PREVIEW)}
    )

    assert shown["error"] == ""
    assert "for Study in Taiwan" in shown["results"]
    assert "for study_in_taiwan" not in shown["results"]


def test_an_error_that_is_not_json_is_shown_as_sent() -> None:
    """A proxy's plain-text error once surfaced as a JSON parse failure."""
    shown = run_page(
        {
            "/segments/options": (200, OPTIONS),
            "/segments/preview": (502, "Bad Gateway from the proxy"),
        }
    )

    assert shown["error"] == "502: Bad Gateway from the proxy"

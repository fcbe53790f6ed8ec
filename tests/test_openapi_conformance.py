"""#11.7: the OpenAPI document describes exactly what the node accepts and answers.

Schemathesis (``--checks all``, bounded examples, a fixed seed) runs against a
real node process on a real grape: generated requests, valid and invalid by
the schema, must get no 5xx, and every answer must conform to the document
(status, content type, headers, body; 405 with ``Allow``; valid data accepted,
invalid data refused).

Two things the document cannot say: a bid's signature (``POST /peer/bids``
with a schema-valid but unsigned bid is refused 400 ``invalid_signature``,
configured as an expected answer there; likewise a gossip envelope's signature,
addressee and time on ``POST /peer/gossip``, and on ``POST /peer/identify`` whether the
node listens at the address named: 421 ``misdirected`` if not), and that ``DELETE /offers/{id}``
cancels an offer, which stays readable with its history (a cancelled record is
part of the book's record), so ``use_after_free`` (a 200 after a DELETE) is
the one check left out. ``GET /events`` (a stream that never ends) is left out
too; tests/test_events.py covers it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from node_helpers import Net

CONFIG = """
[[operations]]
include-path = "/peer/bids"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "404", "409"]

[[operations]]
include-path = "/peer/gossip"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-path = "/peer/identify"
checks.positive_data_acceptance.expected-statuses = ["2xx", "421"]
"""


@pytest.fixture
def net(tmp_path):
    network = Net(tmp_path / "net", grapes=1, nodes=1)
    yield network
    network.close()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(net: Net, tmp_path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is a dev dependency (setup.cfg)"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    url = net.nodes[0].url + "/openapi.json"
    run = subprocess.run(
        [
            cli,
            "--config-file",
            str(config),
            "--no-color",
            "run",
            url,
            "--checks",
            "all",
            "--exclude-checks",
            "use_after_free",
            # an event stream never ends: tests/test_events.py checks it on real nodes
            "--exclude-path",
            "/events",
            # schemathesis 4 spends minutes generating one list of up to 64 signed bids (it did
            # not finish 2 examples in 150 s); the endpoint's edge is checked by
            # tests/test_node_errors.py::test_bid_batches_answer_every_bid_and_refuse_bad_batches
            "--exclude-path",
            "/peer/bid-batches",
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested: " in run.stdout and "failure" not in run.stdout.split("SUMMARY")[-1], report
    assert "Unresolvable references" not in run.stdout, report
    assert "Traceback" not in net.nodes[0].log_tail(10_000)

"""Two worker processes on 127.0.0.1 train the demo together (MultiWorkerMirroredStrategy via TF_CONFIG)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from helpers import REPO, files_under

pytestmark = pytest.mark.slow  # real command lines, trainings and exports

DRIVER = """
import hashlib, sys
import numpy as np
import imseg.train as t
real = t.train
def train(options, prepared, signals):
    real(options, prepared, signals)
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in prepared.model.get_weights())).hexdigest()
    open(sys.argv[1], "w").write(digest)
t.train = train
sys.exit(t.main(sys.argv[2:]))
"""


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_identical_weights_and_only_the_chief_writes(tmp_path):
    from imseg.demo import write_demo_data

    data_path, classes_path, config_path = write_demo_data(str(tmp_path / "demo_data"), counts=(32, 8, 4))
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    DRIVER,
                    str(tmp_path / f"weights-{index}.txt"),
                    "--data_path",
                    data_path,
                    "--classes_path",
                    classes_path,
                    "--config",
                    config_path,
                    "--set",
                    "epochs=1",
                    "--set",
                    "batch_size=8",
                    "--set",  # the backbone up to stride 4: any network shows the workers agree
                    'refine_net_blocks=[["block_3_expand_relu"], ["block_1_expand_relu"]]',
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err
    digests = [(tmp_path / f"weights-{i}.txt").read_text() for i in range(2)]
    assert digests[0] == digests[1]
    assert "2 replica(s)" in outputs[0][1]
    assert "the chief writes the outputs" in outputs[1][1]
    out = tmp_path / "demo_data" / "im_seg" / "out" / "demo"
    written = files_under(str(out))
    assert os.path.exists(out / "checkpoints" / "best.keras") and os.path.exists(out / "resume" / "state.json")
    events = [p for p in written if "tfevents" in p]
    # events.out.tfevents.<time>.<host>.<pid>.<n>.v2: every event file is the chief's (HParams in metrics/ itself)
    assert {p.split(".")[-3] for p in events} == {str(processes[0].pid)}
    assert {os.path.basename(os.path.dirname(p)) for p in events} == {"metrics", "train", "validation"}

"""The torchrun launcher, pure: its command line for one node and for several, its flags' defaults
from the environment, a node's exit codes, and that torchrun knows every flag it passes.
"""

from __future__ import annotations

import subprocess
import sys

from components.runtime import distributed
from components.runtime.distributed import AttemptEnd, Topology


def test_torchrun_command_line_for_one_node_and_for_several() -> None:
    one = distributed.torchrun_argv(Topology(nproc_per_node=2), ["-m", "x"], python="py")
    assert one == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "--max-restarts", "0", "-m", "x"]  # fmt: skip
    topo = Topology(2, 3, 1, "10.0.0.1", 1234)
    many = distributed.torchrun_argv(topo, ["prog"], python="py", no_python=True)
    assert many == ["py", "-m", "torch.distributed.run", "--nnodes", "3", "--node-rank", "1",
                    "--master-addr", "10.0.0.1", "--master-port", "1234", "--nproc-per-node", "2",
                    "--max-restarts", "0", "--local-ranks-filter", "0", "--no-python", "prog"]  # fmt: skip
    assert list(topo.ranks()) == [2, 3] and topo.world_size == 6
    argv = ["--trial-id", "t", "--nproc-per-node", "2", "--nnodes=2", "--node-rank", "1",
            "--master-addr", "h", "--master-port=5", "--params", "{}"]  # fmt: skip
    assert distributed.strip_launcher_flags(argv) == ["--trial-id", "t", "--params", "{}"]


def test_launcher_flags_default_from_the_environment() -> None:
    from components.train import parse_args, topology

    args = parse_args(["--trial-id", "t", "--params", "{}", "--nnodes", "4"])
    env = {
        "JOB_COMPLETION_INDEX": "3",
        "SWEEPYARD_MASTER_ADDR": "head",
        "SWEEPYARD_MASTER_PORT": "7",
    }
    assert topology(args, env) == Topology(1, 4, 3, "head", 7)
    assert topology(args, {}) == Topology(1, 4, 0, "127.0.0.1", 29500)


def test_exit_codes_of_a_node() -> None:
    code = distributed.launcher_exit_code
    ended = AttemptEnd(started=True, exit_code=0)
    assert code(node_rank=0, torchrun_rc=1, stopped=False, end=ended, failures=[]) == 0
    killed = AttemptEnd(started=True, exit_code=None)  # rank 0 left no end record
    assert code(node_rank=0, torchrun_rc=1, stopped=False, end=killed, failures=[]) == 143
    gave_up = AttemptEnd(started=True, exit_code=3)
    assert code(node_rank=0, torchrun_rc=1, stopped=False, end=gave_up, failures=[]) == 3
    other = AttemptEnd()
    assert code(node_rank=1, torchrun_rc=0, stopped=False, end=other, failures=[]) == 0
    assert code(node_rank=1, torchrun_rc=1, stopped=True, end=other, failures=[]) == 143
    assert code(node_rank=1, torchrun_rc=1, stopped=False, end=other, failures=[1]) == 1
    assert code(node_rank=1, torchrun_rc=1, stopped=False, end=other, failures=[]) == 143


def test_torchrun_knows_the_flags_the_launcher_passes() -> None:
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--help"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    for flag in ("--local-ranks-filter", "--no-python", "--max-restarts", "--standalone",
                 "--node-rank", "--master-addr", "--master-port", "--nproc-per-node"):  # fmt: skip
        assert flag in out.stdout

"""`dist-train launch` and launch/*.sh: the exact torchrun commands, a real two-"node" run on this machine, bad input."""

from __future__ import annotations

import sys
import subprocess
import time

import pytest

from support import RECIPES, REPO, TINY_RUN, assert_close_losses, env, free_port, run_cli, train_losses
from dist_train.cluster.torchrun import torchrun_prefix

CONFIG = str(RECIPES / "fashion_mnist_mlp.yaml")
FRESH_STORE = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"  # a fresh rendezvous store per restart (cluster/torchrun.py)


def overrides(fashion_root, run_dir):
    return [f"data.root={fashion_root}", f"run_dir={run_dir}", *TINY_RUN]



def test_dry_run_single_node_is_standalone_torchrun():
    out = run_cli("launch", CONFIG, "train.max_steps=5", "--nproc-per-node", "4", "--dry-run").stdout
    assert out.split() == [FRESH_STORE, *torchrun_prefix(), "--standalone", "--nproc-per-node=4",
                           "-m", "dist_train", "train", CONFIG, "train.max_steps=5"]


def test_dry_run_multi_node_uses_c10d_on_the_head():
    out = run_cli("launch", CONFIG, "--nodes", "2", "--nproc-per-node", "8", "--rdzv-endpoint", "head01",
                  "--rdzv-id", "job7", "--node-rank", "1", "--dry-run").stdout
    assert out.split() == [FRESH_STORE, *torchrun_prefix(), "--nnodes=2", "--nproc-per-node=8",
                           "--rdzv-backend=c10d", "--rdzv-endpoint=head01:29500", "--rdzv-id=job7", "--node-rank=1",
                           "-m", "dist_train", "train", CONFIG]


def test_shell_scripts_dry_run():
    run = lambda *a: subprocess.run([str(REPO / "launch" / a[0]), *a[1:]], env=env(DRY_RUN=1), capture_output=True,
                                    text=True, check=True).stdout.split()
    assert run("torchrun_single_node.sh", "2", CONFIG, "a=1") == [
        "torchrun", "--standalone", "--nproc-per-node=2", "-m", "dist_train", "train", CONFIG, "a=1"]
    assert run("torchrun_multi_node.sh", "2", "4", "h:29400", CONFIG) == [
        "torchrun", "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=h:29400",
        "--rdzv-id=dist-train", "-m", "dist_train", "train", CONFIG]


@pytest.mark.parametrize("args, message", [
    (["train.max_stepz=3"], "train.max_stepz: unknown key"),  # the config is checked before torchrun starts
    (["--nodes", "0"], "--nodes: 0 is not valid"),
    (["--nproc-per-node", "0"], "--nproc-per-node: 0 is not valid"),
    (["--nodes", "2"], "--rdzv-endpoint: required with --nodes 2"),
    (["--nodes", "2", "--rdzv-endpoint", "h:1", "--node-rank", "2"], "--node-rank: 2 is not valid for --nodes 2"),
    (["--nodes", "2", "--rdzv-endpoint", "h:port"], "--rdzv-endpoint: 'h:port' is not HOST[:PORT]"),
])
def test_bad_launch_input_is_one_line(args, message):
    r = run_cli("launch", CONFIG, *args, "--dry-run", check=False)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unreachable_rendezvous_times_out_naming_host_port():
    # 192.0.2.1 is TEST-NET-1: never this machine, never answers.
    started = time.monotonic()
    r = run_cli("launch", CONFIG, "--nodes", "2", "--rdzv-endpoint", "192.0.2.1:29511", "--rdzv-timeout", "2",
                check=False, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "192.0.2.1:29511 not reachable after 2 s" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 30


def test_two_nodes_on_one_machine_match_one_node(fashion_root, tmp_path, torchrun_2proc_losses):
    """Two `dist-train launch --nodes 2` invocations (node rank 0 and 1, 1 process each) form one 2-node job."""
    endpoint = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "dist_train", "launch", CONFIG,
         *overrides(fashion_root, tmp_path / "run"), "--nodes", "2", "--nproc-per-node", "1",
         "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes", "--node-rank", str(rank)],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert any("world size 2" in o for o in outputs)
    assert_close_losses(train_losses(tmp_path / "run"), torchrun_2proc_losses, rel=1e-5)

"""Several processes (torchrun, gloo on the CPU): the same results as one process, shared decisions, no hangs."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pdeconv import distributed, engine
from pdeconv.engine import TrainConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _torchrun(*args: str, nproc: int = 2, timeout: float = 240, extra: tuple[str, ...] = ()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PDECONV_DIST_TIMEOUT": "60", "PYTHONPATH": str(FIXTURES.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *extra, *args]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return done, time.monotonic() - start


@pytest.fixture
def fmnist(tmp_path, make_fashion_mnist):
    return make_fashion_mnist(tmp_path / "data", 64, 32)


# ------------------------------------------------------------------------------------------ exactness


def bn_free(info) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(info.in_chans, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, info.num_classes),
    )


def _worker(rank: int, world: int, port: int, data_dir: str, out: str, results: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    built = []
    cfg = TrainConfig(data_dir=data_dir, epochs=2, batch_size=16, lr=0.05, out=out, device="cpu", progress=False,
                      threads="1")
    engine.train(cfg, lambda info: built.append(bn_free(info)) or built[0])
    torch.save(built[0].state_dict(), os.path.join(results, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_what_one_process_trains(tmp_path, fmnist):
    # The same global batch of 16 split over two processes: the same images, the same augmentation draws (drawn
    # per global batch), gradients averaged by DDP, so the same parameters as one process up to the order of
    # float32 sums (per-sample gradient sums split in two, then added): 1e-5 relative after 8 SGD steps.
    # A model without BatchNorm: BatchNorm normalises each process's half batch, another computation.
    single = TrainConfig(data_dir=str(fmnist), epochs=2, batch_size=16, lr=0.05, out=str(tmp_path / "one"),
                         device="cpu", progress=False, threads="1")
    built = []
    engine.train(single, lambda info: built.append(bn_free(info)) or built[0])
    args = (2, _free_port(), str(fmnist), str(tmp_path / "two"), str(tmp_path))
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="fork")
    two = torch.load(tmp_path / "rank0.pt", weights_only=True)
    for name, value in built[0].state_dict().items():
        torch.testing.assert_close(two[name], value, rtol=1e-5, atol=1e-6, msg=name)
    a, b = (json.loads(line) for line in ((tmp_path / r / engine.METRICS).read_text().splitlines()[-1]
                                          for r in ("one", "two")))
    assert a["test_acc"] == b["test_acc"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


# ------------------------------------------------------------------------------------------ torchrun


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_torchrun_compare_writes_one_table_and_a_rerun_skips(tmp_path, fmnist):
    args = ["-m", "pdeconv", "compare", "--variants", "baseline,varcoef", "--seeds", "2", "--epochs", "1",
            "--batch-size", "16", "--data-dir", str(fmnist), "--no-progress", "--threads", "1"]
    done, _ = _torchrun(*args, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("[1/4] baseline seed 0: training") == 1  # rank 0 speaks, once
    two = _rows(tmp_path / "two")
    assert [(r["variant"], r["seed"]) for r in two] == [("baseline", "0"), ("baseline", "1"), ("varcoef", "0"),
                                                          ("varcoef", "1")]
    assert not list((tmp_path / "two").glob("*.tmp")) and (tmp_path / "two" / "report.md").exists()
    for run in (tmp_path / "two" / "runs").glob("*/seed*"):
        assert json.loads((run / engine.CONFIG).read_text())["world_size"] == 2
    # one process, the same experiment: the same runs and costs; accuracies differ only through BatchNorm
    # statistics over half batches (32 test images after one epoch of 4 steps: within 8 images)
    from pdeconv.cli import main

    assert main(["compare", *args[3:], "--out", str(tmp_path / "one")]) == 0
    for a, b in zip(_rows(tmp_path / "one"), two):
        assert (a["variant"], a["seed"], a["params"], a["flops"], a["epochs"]) == (
            b["variant"], b["seed"], b["params"], b["flops"], b["epochs"])
        assert abs(float(a["test_acc"]) - float(b["test_acc"])) <= 8 / 32
    again, _ = _torchrun(*args, "--out", str(tmp_path / "two"))
    assert again.returncode == 0 and again.stdout.count("finished earlier, skipped") == 4


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fail-build", "fail-step"])
def test_a_failing_rank_ends_every_rank_quickly(tmp_path, fmnist, mode):
    done, seconds = _torchrun(str(FIXTURES / "dist_worker.py"), mode, str(fmnist), str(tmp_path / "run"))
    assert done.returncode != 0 and seconds < 30  # torchrun stops the waiting rank: nobody waits the 60 s timeout
    assert ("cannot build its model" if mode == "fail-build" else "out of memory (simulated)") in done.stderr


@pytest.mark.slow
def test_resume_under_two_processes_continues_from_the_checkpoint(tmp_path, fmnist):
    stopped, _ = _torchrun(str(FIXTURES / "dist_worker.py"), "stop-after-1", str(fmnist), str(tmp_path / "run"))
    assert stopped.returncode != 0 and engine.load_checkpoint(tmp_path / "run" / engine.CHECKPOINT)["epoch"] == 1
    done, _ = _torchrun(str(FIXTURES / "dist_worker.py"), "resume", str(fmnist), str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = [json.loads(m) for m in (tmp_path / "run" / engine.METRICS).read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert engine.load_checkpoint(tmp_path / "run" / engine.CHECKPOINT)["epoch"] == 2


@pytest.mark.slow
def test_two_nodes_on_one_machine(tmp_path, fmnist):
    # torchrun's static rendezvous, one process per "node", both on this machine: a multi-node launch in small
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PDECONV_DIST_TIMEOUT": "60"}
    args = ["-m", "pdeconv", "compare", "--variants", "baseline", "--seeds", "1", "--epochs", "1", "--batch-size",
            "16", "--data-dir", str(fmnist), "--no-progress", "--threads", "1", "--out", str(tmp_path / "exp")]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={n}",
                               "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    run = tmp_path / "exp" / "runs" / "baseline" / "seed0"
    assert json.loads((run / engine.CONFIG).read_text())["world_size"] == 2 and len(_rows(tmp_path / "exp")) == 1
    assert "[1/1] baseline seed 0: training" in outputs[0][0] and "training" not in outputs[1][0]  # rank 0 speaks


@pytest.mark.slow
def test_torchrun_train_channels_last_keeps_ddp_buckets_and_gradients_alike(tmp_path, fmnist):
    # depthwise kernels (C·m, 1, 3, 3) and field weights (C, 6, 1, 1) have size-1 dimensions: their gradients
    # must come back with the parameters' strides, or DDP warns and copies every step
    done, _ = _torchrun("-m", "pdeconv", "train", "--variant", "seed", "--channels-last", "--epochs", "1",
                        "--batch-size", "16", "--data-dir", str(fmnist), "--out", str(tmp_path / "run"),
                        "--no-progress", "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Grad strides do not match" not in done.stderr
    assert done.stdout.count("final test accuracy") == 1


# ------------------------------------------------------------------------------------------ bad settings


def test_inconsistent_device_settings_are_one_line_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(distributed.DistributedError, match="`device` cuda:1 under torchrun would put every process"):
        distributed._device("cuda:1", world=2, local=0, local_world=2)
    with pytest.raises(distributed.DistributedError, match="started 4 processes on this machine but 2 GPUs"):
        distributed._device("cuda", world=4, local=3, local_world=4)
    assert distributed._device("cuda", world=2, local=1, local_world=2) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a scheduler shows each process one GPU
    assert distributed._device("cuda", world=8, local=5, local_world=8) == torch.device("cuda", 0)
    assert distributed._device("cuda:1", world=1, local=0, local_world=1) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(distributed.DistributedError, match="no CUDA GPU is available; use `device` cpu"):
        distributed._device("cuda", world=1, local=0, local_world=1)


def test_cli_refuses_an_explicit_gpu_under_torchrun(monkeypatch, capsys):
    from pdeconv.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["train", "--device", "cuda:1", "--out", "never"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda:1 under torchrun would put every process on GPU 1; pass --device cuda" in err
    assert len(err.strip().splitlines()) == 1
    assert not Path("never").exists()


def test_amp_auto_on_gpus_that_only_emulate_bf16_is_fp16_with_tensor_cores_else_float32(monkeypatch):
    asked = {}

    def supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return including_emulation  # a V100/T4 (or older): bf16 only by emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # V100: fp16 tensor cores
    assert engine.resolve_amp("auto", torch.device("cuda", 0)) == "fp16" and asked == {"including_emulation": False}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))  # P100: none
    assert engine.resolve_amp("auto", torch.device("cuda", 0)) == "none"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # A100, H100
    assert engine.resolve_amp("auto", torch.device("cuda", 0)) == "bf16"


def test_sync_bn_on_cpus_is_refused_with_what_to_do(tmp_path, fmnist, monkeypatch):
    from pdeconv.distributed import Processes

    procs = Processes(0, 2, 0, 2, torch.device("cpu"), owns_group=False)
    monkeypatch.setattr(engine, "start", lambda device, deterministic=False: procs)
    monkeypatch.setattr(engine, "on_main", lambda fn, main: fn())
    monkeypatch.setattr(engine, "_build_loaders", lambda config, p: engine.build_loaders(
        "fashion-mnist", data_dir=config.data_dir, batch_size=8, device="cpu"))
    config = TrainConfig(data_dir=str(fmnist), epochs=1, batch_size=16, out=str(tmp_path / "r"), device="cpu",
                         progress=False, sync_bn=True, threads="1")
    with pytest.raises(ValueError, match="`sync_bn` needs GPUs .* leave `sync_bn` off"):
        engine.train(config, bn_free)

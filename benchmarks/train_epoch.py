"""Training throughput and memory: an epoch of ``relaxed_e3nn.train.train`` against the model's own work.

Data: 100 bulk-Cu cells of 32-108 atoms labelled with EMT (``_emt_copper.copper_frames``), written
as extxyz. The run: ``relaxed_e3nn.train.train`` with the default model and training settings,
batch 8, 1 thread, validation fraction 0.1, no test split, the symmetry validation after training
switched off (it is not part of an epoch), ``--epochs`` epochs (default 2).

Printed:

* each epoch's wall time as the trainer records it (``history[k]["time_s"]``: the training steps
  and the validation pass, with whatever else the loop does per epoch);
* the reference: the same model's forward + backward (energy and forces; forces with
  ``create_graph`` and a backward of an energy + force loss in training mode) over the same
  training batches, and its forward with forces over the validation batches, timed in the same
  process after training;
* their ratio for the last epoch (target ≤ 1.3);
* the peak resident memory of the training process (``ru_maxrss``; target ≤ 1 GiB), and the
  resident memory before any data is read (Python, torch and e3nn alone).

``--profile`` also prints the 25 functions with the largest cumulative time of one more epoch
under ``cProfile``. The run happens in a child process (``OMP_NUM_THREADS=1``) so that its peak
memory is its own. Wall times depend on the machine's load: say how loaded it was with the numbers.

Usage: python benchmarks/train_epoch.py [--cells 100] [--epochs 2] [--profile]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _emt_copper import copper_frames

BATCH_SIZE = 8


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reference_seconds(model, graphs, split, seed: int, epoch: int) -> dict:
    """Forward + backward of ``model`` over the epoch's training batches, forward over validation."""
    import torch

    from relaxed_e3nn.data import collate
    from relaxed_e3nn.train import epoch_permutation

    train = [graphs[i] for i in split["train"]]
    val = [graphs[i] for i in split["val"]]
    order = epoch_permutation(len(train), seed, epoch).tolist()
    batches = [[train[i] for i in order[k:k + BATCH_SIZE]] for k in range(0, len(order), BATCH_SIZE)]
    model.train()
    start = time.perf_counter()
    for batch in batches:
        batch = collate(batch)
        out = model(batch, compute_forces=True)
        n = torch.bincount(batch.batch, minlength=batch.num_graphs)
        loss = ((out["energy"] - batch.graph_targets["energy"].reshape(-1)) / n).pow(2).mean() \
            + (out["forces"] - batch.node_targets["forces"]).pow(2).mean()
        model.zero_grad(set_to_none=True)
        loss.backward()
    train_s = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    for k in range(0, len(val), BATCH_SIZE):
        out = model(collate(val[k:k + BATCH_SIZE]), compute_forces=True)
        out["forces"].detach()
    return {"reference_train_s": train_s, "reference_val_s": time.perf_counter() - start}


def _worker(data_path: str, out_dir: str, epochs: int, profile: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    import ase.io

    from relaxed_e3nn.train import graphs_for_model, load_checkpoint, train

    baseline = _rss_mib()
    config = {"output_dir": out_dir, "epochs": epochs, "batch_size": BATCH_SIZE, "progress": False,
              "data": {"train": data_path, "val_fraction": 0.1, "test_fraction": 0.0},
              "symmetry": {"validate": False}}
    start = time.perf_counter()
    result = train(config)
    total = time.perf_counter() - start
    peak = _rss_mib()
    checkpoint = load_checkpoint(Path(out_dir) / "checkpoint.pt")
    graphs = graphs_for_model(result.model, ase.io.read(data_path, index=":"))
    reference = _reference_seconds(result.model, graphs, checkpoint["split"], seed=0, epoch=epochs - 1)
    row = {"epoch_s": [h["time_s"] for h in result.history], "train_total_s": total, "peak_rss_mib": peak,
           "baseline_rss_mib": baseline, "num_train": len(checkpoint["split"]["train"]),
           "num_val": len(checkpoint["split"]["val"]),
           "parameters": sum(p.numel() for p in result.model.parameters())}
    row.update(reference)
    if profile:
        row["profile"] = _profile_one_epoch(config, out_dir, epochs)
    return row


def _profile_one_epoch(config, out_dir, epochs) -> str:
    """cProfile of one more epoch (resumed from the checkpoint), the top 25 by cumulative time."""
    import cProfile
    import io
    import pstats

    from relaxed_e3nn.train import train

    resumed = dict(config, epochs=epochs + 1, resume=True)
    profiler = cProfile.Profile()
    profiler.enable()
    train(resumed)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker, args.epochs, args.profile)))
        return
    import ase.io

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cu.xyz"
        frames = copper_frames(args.cells, seed=0)
        ase.io.write(str(data), frames, format="extxyz")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        command = [sys.executable, __file__, "--worker", str(data), str(Path(tmp) / "run"),
                   "--epochs", str(args.epochs)] + (["--profile"] if args.profile else [])
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"training failed:\n{done.stderr[-4000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
    atoms = sum(len(a) for a in frames)
    print(f"{args.cells} EMT Cu cells ({atoms} atoms), {row['num_train']} training / {row['num_val']} "
          f"validation, batch {BATCH_SIZE}, default model ({row['parameters']} parameters), 1 thread")
    for k, seconds in enumerate(row["epoch_s"]):
        print(f"  epoch {k + 1}: {seconds:.1f} s wall")
    reference = row["reference_train_s"] + row["reference_val_s"]
    ratio = row["epoch_s"][-1] / reference
    print(f"  model forward+backward over the same batches: {reference:.1f} s "
          f"({row['reference_train_s']:.1f} s training batches, {row['reference_val_s']:.1f} s validation)")
    print(f"  epoch / (forward+backward) = {ratio:.2f}  (target <= 1.3: {'met' if ratio <= 1.3 else 'not met'})")
    print(f"  whole train() call: {row['train_total_s']:.1f} s wall")
    met = "met" if row["peak_rss_mib"] <= 1024 else "not met"
    print(f"  peak memory {row['peak_rss_mib']:.0f} MiB (target <= 1024: {met}); "
          f"before reading data {row['baseline_rss_mib']:.0f} MiB")
    if "profile" in row:
        print(row["profile"])


if __name__ == "__main__":
    main()

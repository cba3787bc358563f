"""Charged particles in a box: DEGNN (box group) vs its trivial-group twin vs EGNN.

Task: 5 charged (+-1, Coulomb) particles in a box with specular walls, dt 1e-3, a frame every
100 steps, initial speeds 0.5; input frame 20 (positions, velocities), target positions at
frame 40; 200/200/200 train/val/test samples. All models share width, depth, optimiser, batch
size (25) and epochs (200 by default); each seed changes the initialisation and the batch
order (the data are fixed).

Prints, per box, the test MSE of each model as mean +- std over seeds, and the time of one
training step (forward + backward + Adam on 100 five-body graphs) relative to EGNN, timed in
this process (medians of repeats) for |G| = 8 (D2h) and |G| = 48 (Oh).

Usage::

    python benchmarks/box_dynamics.py            # full: 5 seeds, boxes (5,4,3) and cube (5,5,5)
    python benchmarks/box_dynamics.py --quick    # a smoke run in well under a minute
"""
import argparse
import statistics
import sys
import time

import torch

from relaxed_e3nn.data.generators import box_nbody
from relaxed_e3nn.discrete import DEGNN, EGNN, fully_connected_batch
from relaxed_e3nn.train import train_dynamics
from relaxed_e3nn.groups import point_group


def time_training_step(model, num_graphs=100, num_bodies=5, repeats=20, warmup=3, seed=0):
    """Median wall and CPU time (s) of one Adam step on ``num_graphs`` fully connected ``num_bodies`` graphs.

    On a shared machine the CPU time of this process is the steadier of the two.
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_graphs * num_bodies
    pos = torch.rand(n, 3, generator=gen) * 8 - 4
    vel = torch.randn(n, 3, generator=gen) * 0.5
    charge = torch.randint(0, 2, (n, 1), generator=gen).to(pos.dtype) * 2 - 1
    target = pos + torch.randn(n, 3, generator=gen)
    edge_src, edge_dst, batch = fully_connected_batch(num_graphs, num_bodies)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    wall, cpu = [], []
    for i in range(warmup + repeats):
        tic, tic_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        loss = ((model(pos, vel, charge, edge_src, edge_dst, batch=batch) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            wall.append(time.perf_counter() - tic)
            cpu.append(time.process_time() - tic_cpu)
    return statistics.median(wall), statistics.median(cpu)


def timing_table(hidden, num_layers, repeats, variants):
    torch.manual_seed(0)
    print(f"\n== time per training step (100 five-body graphs, hidden {hidden}, {num_layers} layers, "
          f"orbit width {hidden}; medians of {repeats}) ==")
    print("model                        wall ms  ratio   CPU ms  ratio   (EGNN timed alongside: wall, CPU ms)")
    for name in ("D2h", "Oh"):
        group = point_group(name)
        for variant in variants:
            # a fresh baseline next to each measurement, so that load drifts affect both sides alike
            base_wall, base_cpu = time_training_step(EGNN(1, hidden=hidden, layers=num_layers), repeats=repeats)
            model = DEGNN(group, 1, hidden=hidden, layers=num_layers, variant=variant)
            wall, cpu = time_training_step(model, repeats=repeats)
            print(
                f"DEGNN {name:3s} |G|={group.order:2d} {variant:9s} {wall * 1e3:8.1f} {wall / base_wall:6.2f}x "
                f"{cpu * 1e3:8.1f} {cpu / base_cpu:6.2f}x   ({base_wall * 1e3:.1f}, {base_cpu * 1e3:.1f})"
            )
            sys.stdout.flush()


def accuracy_table(half_widths, seeds, epochs, num_split, hidden, num_layers, lr, batch_size):
    data = box_nbody(
        num_samples=3 * num_split,
        num_bodies=5,
        half_widths=half_widths,
        interaction="coulomb",
        speed=0.5,
        input_frame=20,
        target_frame=40,
        seed=0,
    )
    print(f"\n== box half-widths {tuple(half_widths)}: group {data.group_name}, "
          f"{num_split}/{num_split}/{num_split} samples, {epochs} epochs, seeds {list(seeds)} ==")
    models = [("DEGNN", "degnn", "auto"), ("DEGNN-C1 (trivial)", "degnn", "C1"), ("EGNN", "egnn", "auto")]
    results = {label: [] for label, _, _ in models}
    for seed in seeds:
        for label, model, group in models:
            config = dict(
                model=model, group=group, hidden=hidden, num_layers=num_layers, half_widths=list(half_widths),
                num_train=num_split, num_val=num_split, num_test=num_split, epochs=epochs, lr=lr,
                batch_size=batch_size, seed=seed,
            )
            tic = time.perf_counter()
            out = train_dynamics(config, data=data)
            results[label].append(out["test_mse"])
            print(f"  seed {seed} {label:20s} test MSE {out['test_mse']:.4f}  (val {out['val_mse']:.4f}, "
                  f"best epoch {out.best_epoch}/{epochs}, {out['time_per_step_s'] * 1e3:.1f} ms/step, "
                  f"{time.perf_counter() - tic:.0f} s)")
            sys.stdout.flush()
    print(f"-- summary {tuple(half_widths)} ({data.group_name}) --")
    for label, values in results.items():
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"  {label:20s} test MSE {statistics.mean(values):.4f} +- {std:.4f}  over {len(values)} seeds")
    sys.stdout.flush()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (1 seed, few epochs, small splits)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cube-seeds", type=int, default=None, help="seeds for the cube box (default: --seeds)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", choices=["timing", "box", "cube"], action="append", default=[])
    parser.add_argument(
        "--timing-variants", nargs="+", choices=["pooling", "attention", "ranking"],
        default=["pooling", "attention", "ranking"],
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    num_split, seeds, epochs, repeats = 200, range(args.seeds), args.epochs, 20
    cube_seeds = range(args.cube_seeds if args.cube_seeds is not None else args.seeds)
    variants = tuple(args.timing_variants)
    if args.quick:
        num_split, seeds, cube_seeds, epochs, repeats, variants = 40, range(1), range(1), 3, 3, ("pooling",)
    if "timing" not in args.skip:
        timing_table(args.hidden, args.num_layers, repeats, variants)
    training = (epochs, num_split, args.hidden, args.num_layers, args.lr, args.batch_size)
    if "box" not in args.skip:
        accuracy_table((5.0, 4.0, 3.0), seeds, *training)
    if "cube" not in args.skip:
        accuracy_table((5.0, 5.0, 5.0), cube_seeds, *training)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
r"""Speed, memory and FLOP/s of GSNet: plain inference, sliding-window evaluation, training step.

    python tools/benchmark.py                                   # paper config, CPU, fp32
    python tools/benchmark.py --dtype bf16 --json bench.json
    python tools/benchmark.py --device cuda --batch-size 8 --compile
    python tools/benchmark.py --config configs/toy.yaml --quick

The model has random weights (no weight file is read). Phases:
  plain    one whole-image inference of --batch-size CROP.SIZE images (384 x 384), no_grad;
  sliding  the paper's evaluation of one test-mapper-sized image (MIN_SIZE_TEST x 4/3 of it,
           640 x 853): four windows + one global view, POOLING_SIZES 1x1;
  train    one training step on --train-batch-size CROP.SIZE images: forward (autocast with
           --dtype bf16), backward and the optimizer step (GSNetTrainer.build_optimizer: the
           real parameter groups, AdamW, full-model gradient clipping).
Every phase is timed --repeats times after --warmup untimed runs (the first of which counts
the FLOPs) and reports the median. FLOPs are counted once with
torch.utils.flop_counter.FlopCounterMode: matrix products, convolutions and attention only, a
multiply-add counted as 2 FLOPs; inference FLOPs exclude the text encoder (embeddings are
cached per vocabulary), training FLOPs are forward + backward. The floor of a phase is its
FLOPs divided by the measured peak of one large square matrix product on the same device
and dtype (timed by torch.utils.benchmark.Timer); "x floor" is the measured time over that
floor. The phases keep their own timing loop: a phase runs for seconds, and Timer's calls add
warm-up runs of their own (timeit) or choose the number of runs themselves (blocked_autorange),
where --warmup and --repeats are to say both.
Peak memory: the process's peak resident set on CPU (each phase runs in its own process
unless --no-isolate), torch.cuda.max_memory_allocated on GPU. Every process runs under the
allocator policy of GSNet's tools (gsnet.allocator.keep_freed_memory; "env" in the JSON says
whether it was in force).
Config overrides (KEY VALUE ...) go at the end, as with Detectron2's tools.
"""

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils import benchmark as torch_benchmark

from gsnet.config import CONFIG_KEY
from gsnet.errors import USER_ERROR_STATUS, add_debug_flag, reporting_user_errors

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("plain", "sliding", "train")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TEST_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}


# ---------------------------------------------------------------------------- measuring helpers
def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_runs(fn, *, device, repeats):
    """Seconds of ``repeats`` calls of ``fn`` (synchronised on GPU)."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak_flops(device, dtype, *, sizes=None, min_run_time=1.0):
    """Best FLOP/s (2 n^3 FLOPs) of square matrix products, each timed by torch.utils.benchmark
    (median over at least ``min_run_time`` seconds, after its warm-up, on this process's
    threads); returns (FLOP/s, n). Default sizes: 8192 on GPU; 2048 and 4096 on CPU (1024 for
    bf16 there, through F.linear: oneDNN's path, the only fast one on CPUs without
    AVX512-BF16/AMX)."""
    device = torch.device(device)
    if sizes is None:
        if device.type == "cuda":
            sizes = (8192,)
        else:
            sizes = (2048, 4096) if dtype == torch.float32 else (1024,)
    product = F.linear if device.type == "cpu" and dtype != torch.float32 else torch.mm
    best = (0.0, None)
    for size in sizes:
        timer = torch_benchmark.Timer(
            "product(a, b)",
            globals={
                "product": product,
                "a": torch.randn(size, size, device=device).to(dtype),
                "b": torch.randn(size, size, device=device).to(dtype),
            },
            num_threads=torch.get_num_threads(),
        )
        seconds = timer.blocked_autorange(min_run_time=min_run_time).median
        best = max(best, (2 * size**3 / seconds, size), key=lambda r: r[0])
    return best


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flops(grad_shape, query_shape, key_shape, value_shape, *args, **kwargs):
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


def _nnpack_convolution_flops(input_shape, weight_shape, *args, out_shape, **kwargs):
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(input_shape, weight_shape, out_shape)


def flop_counter():
    """FlopCounterMode that also counts the CPU fused attention kernels and NNPACK's convolution
    (not registered in torch's table; a convolution counts the FLOPs of the direct method,
    whatever algorithm computes it)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops,
            aten._nnpack_spatial_convolution: _nnpack_convolution_flops,
        },
    )


def count_flops(fn):
    """Runs ``fn`` once and returns its FLOPs (matmul/conv/attention, multiply-add = 2)."""
    counter = flop_counter()
    with counter:
        fn()
    return counter.get_total_flops()


def _vm_hwm_kib():
    try:
        with open("/proc/self/status") as status:
            match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
        return int(match.group(1)) if match else None
    except OSError:
        return None


def reset_peak_memory(device):
    """Start a new peak-memory window (GPU allocator stats; on Linux also the RSS peak)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak_memory_gib(device):
    """Peak GPU memory allocated by PyTorch, or the peak resident set of this process."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    kib = _vm_hwm_kib()
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2**20


# ---------------------------------------------------------------------------- inputs
def random_image(height, width, generator):
    """A smooth random image, (3, height, width) float 0-255 (as Detectron2's mapper gives)."""
    low = torch.rand(1, 3, height // 16 + 1, width // 16 + 1, generator=generator) * 255
    image = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]
    image = image + 20 * torch.randn(3, height, width, generator=generator)
    return image.round().clamp(0, 255)


def random_labels(height, width, num_classes, generator):
    low = torch.randint(
        0, num_classes, (1, 1, height // 32 + 1, width // 32 + 1), generator=generator
    )
    return F.interpolate(low.float(), size=(height, width), mode="nearest")[0, 0].long()


def benchmark_inputs(cfg, *, batch_size, train_batch_size, seed=2024):
    """Deterministic inputs of the three phases, shaped by the config."""
    generator = torch.Generator().manual_seed(seed)
    crop_h, crop_w = cfg.INPUT.CROP.SIZE
    short = cfg.INPUT.MIN_SIZE_TEST
    long = int(round(short * 4 / 3))  # a 4:3 test image after the test mapper's resize
    plain = [
        {"image": random_image(crop_h, crop_w, generator), "height": crop_h, "width": crop_w}
        for _ in range(batch_size)
    ]
    sliding = [{"image": random_image(short, long, generator), "height": short, "width": long}]
    train = [
        {
            "image": random_image(crop_h, crop_w, generator),
            "sem_seg": random_labels(crop_h, crop_w, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, generator),
        }
        for _ in range(train_batch_size)
    ]
    return {"plain": plain, "sliding": sliding, "train": train}


def vocabulary(train_names, test_names, num_classes):
    """``num_classes`` inference names: the test list, else training names, else made up."""
    if num_classes is None:
        return list(test_names)
    pool = list(dict.fromkeys([*test_names, *train_names]))
    return (pool + [f"class {i}" for i in range(len(pool), num_classes)])[:num_classes]


# ---------------------------------------------------------------------------- phases
def run_phase(
    phase,
    model,
    inputs,
    *,
    device,
    dtype,
    warmup,
    repeats,
    optimizer=None,
    inference_autocast=False,
):
    """Times one phase on a built model; returns a dict of measurements."""
    autocast = torch.autocast(
        torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32
    )
    if phase == "train":
        model.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                losses = model(inputs)
            sum(losses.values()).backward()
            optimizer.step()

        def counted():  # forward + backward, no optimizer step (elementwise only)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                losses = model(inputs)
            sum(losses.values()).backward()

    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast if inference_autocast else contextlib.nullcontext():
                model(inputs)

        counted = step
    step()  # one-time costs (text embeddings cached per vocabulary, kernel set-up)
    flops = count_flops(counted)
    for _ in range(max(warmup - 1, 0)):
        step()
    reset_peak_memory(device)
    times = time_runs(step, device=device, repeats=repeats)
    images = len(inputs)
    seconds = statistics.median(times)
    return {
        "images": images,
        "times_s": times,
        "median_s": seconds,
        "min_s": min(times),
        "per_image_s": seconds / images,
        "images_per_s": images / seconds,
        "flops": flops,
        "achieved_flops_per_s": flops / seconds,
        "peak_memory_gib_timed": peak_memory_gib(device),
    }


def add_floor(result, peak_flops):
    floor = result["flops"] / peak_flops
    result["floor_s"] = floor
    result["time_over_floor"] = result["median_s"] / floor if floor else None
    result["fraction_of_peak"] = result["achieved_flops_per_s"] / peak_flops
    return result


# ---------------------------------------------------------------------------- our model
class GSNetTarget:
    """Builds this project's GSNet for a phase (random weights)."""

    name = "gsnet"

    def __init__(self, args):
        from gsnet.config import load_config

        self.args = args
        self.cfg = load_config(args.config, args.opts, device=args.device)

    @staticmethod
    def configure_process():
        """Process-wide settings of GSNet's tools, before anything is built; returns whether
        the allocator keeps freed memory (see gsnet.allocator)."""
        from gsnet.allocator import keep_freed_memory

        return keep_freed_memory()

    def build(self, phase):
        from detectron2.modeling import build_model

        cfg = self.cfg.clone()
        cfg.TEST.PRECISION = TEST_PRECISIONS[self.args.dtype]
        if phase == "sliding":
            from gsnet.config import PAPER_EVALUATION_OVERRIDES

            cfg.merge_from_list(list(PAPER_EVALUATION_OVERRIDES))
        elif phase == "plain":
            cfg.TEST.SLIDING_WINDOW = False
        torch.manual_seed(0)
        model = build_model(cfg)
        if phase != "train":
            names = vocabulary(
                model.train_class_names, model.test_class_names, self.args.num_classes
            )
            model.set_test_class_names(names)
        if self.args.compile:
            for module in (model.generalist, model.specialist, model.sem_seg_head):
                if module is not None:
                    module.compile()
        return model

    def optimizer(self, model):
        from gsnet.training import GSNetTrainer

        return GSNetTrainer.build_optimizer(self.cfg, model)

    def num_classes(self, model):
        return len(model.test_class_names)

    # Our model applies TEST.PRECISION itself.
    inference_autocast = False


# ---------------------------------------------------------------------------- driver
def build_parser(description=__doc__):
    parser = argparse.ArgumentParser(
        description=description.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=description.split("\n\n", 1)[1],
    )
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "vitb_384.yaml"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch-size", type=int, default=1, help="images of plain inference")
    parser.add_argument("--train-batch-size", type=int, default=2, help="images per training step")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="inference vocabulary size (default: the test JSON)",
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES)
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the encoders and head"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per phase (>= 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per phase")
    parser.add_argument("--quick", action="store_true", help="1 warm-up, 1 timed run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="run all phases in this process (CPU peak memory then covers earlier phases too)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--skip-peak", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return add_debug_flag(parser)


def parse_args(argv=None, description=__doc__):
    parser = build_parser(description)
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats = 1, 1
    args.warmup = max(args.warmup, 1)
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    if args.opts and not CONFIG_KEY.match(args.opts[0]):
        parser.error(f"config overrides must start with a KEY, got {args.opts[0]!r}")
    return args


def load_average():
    """The 1-minute load average (other processes compete for the cores), or None."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def environment(args):
    device = torch.device(args.device)
    info = {
        "torch": torch.__version__,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def measure(target, args):
    """Runs the requested phases in this process; returns {phase: result}."""
    device, dtype = args.device, DTYPES[args.dtype]
    results = {}
    for phase in args.phases:
        gc.collect()
        reset_peak_memory(args.device)
        build_start = time.perf_counter()
        model = target.build(phase)
        build_s = time.perf_counter() - build_start
        inputs = benchmark_inputs(
            target.cfg, batch_size=args.batch_size, train_batch_size=args.train_batch_size
        )[phase]
        optimizer = target.optimizer(model) if phase == "train" else None
        result = run_phase(
            phase,
            model,
            inputs,
            device=device,
            dtype=dtype,
            warmup=args.warmup,
            repeats=args.repeats,
            optimizer=optimizer,
            inference_autocast=target.inference_autocast,
        )
        result["build_s"] = build_s
        result["peak_memory_gib"] = peak_memory_gib(device)
        # Matrix-product peak around the phase: a drop from the best value flags contention.
        result["matmul_peak_flops_after"] = matmul_peak_flops(device, dtype, min_run_time=0.5)[0]
        result["load_average"] = load_average()
        if phase != "train":
            result["num_classes"] = target.num_classes(model)
        results[phase] = result
        del model, optimizer
    return results


def run_isolated(script, argv, opts, phases):
    """Each phase in a fresh process (the peak resident set is per process)."""
    flags = argv[: len(argv) - len(opts)] if opts else list(argv)
    results = {}
    for phase in phases:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "phase.json")
            command = [sys.executable, str(script), *flags, "--phases", phase]
            command += ["--no-isolate", "--skip-peak", "--json", out, *opts]
            status = subprocess.run(command).returncode
            if status == USER_ERROR_STATUS:  # the phase's process has printed the error
                raise SystemExit(USER_ERROR_STATUS)
            if status:
                raise RuntimeError(f"the {phase} phase's process failed with status {status}")
            with open(out) as handle:
                results.update(json.load(handle)["phases"])
    return results


def format_table(report):
    header = (
        f"{'phase':8} {'imgs':>4} {'median s':>9} {'min s':>8} {'s/img':>8} {'img/s':>7} "
        f"{'GFLOP':>9} {'GFLOP/s':>8} {'%peak':>6} {'floor s':>8} {'x floor':>7} {'peak GiB':>8}"
    )
    lines = [
        f"{report['target']}: {report['env']['device']} {report['env']['dtype']}, "
        f"{report['env']['threads']} threads, torch {report['env']['torch']}; matmul peak "
        f"{report.get('matmul_peak_flops', 0) / 1e9:.1f} GFLOP/s (n={report.get('matmul_size')})",
        header,
        "-" * len(header),
    ]
    for phase, r in report["phases"].items():
        lines.append(
            f"{phase:8} {r['images']:>4} {r['median_s']:>9.3f} {r['min_s']:>8.3f} "
            f"{r['per_image_s']:>8.3f} "
            f"{r['images_per_s']:>7.3f} {r['flops'] / 1e9:>9.1f} "
            f"{r['achieved_flops_per_s'] / 1e9:>8.1f} {100 * r.get('fraction_of_peak', 0):>6.1f} "
            f"{r.get('floor_s', 0):>8.3f} {r.get('time_over_floor') or 0:>7.2f} "
            f"{r['peak_memory_gib']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv=None, *, target_class=GSNetTarget, script=__file__, description=__doc__):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, description)
    with reporting_user_errors("benchmark.py", debug=args.debug):
        return run(args, argv, target_class=target_class, script=script)


def run(args, argv, *, target_class, script):
    """The benchmark report of ``args`` (printed, and written to --json)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"target": target_class.name, "env": environment(args), "args": vars(args).copy()}
    report["env"]["keep_freed_memory"] = target_class.configure_process()
    if not args.skip_peak:
        peak, size = matmul_peak_flops(args.device, DTYPES[args.dtype])
        report["matmul_peak_flops"], report["matmul_size"] = peak, size
    if args.isolate and len(args.phases) > 1 and torch.device(args.device).type == "cpu":
        report["phases"] = run_isolated(script, argv, args.opts, args.phases)
    else:
        report["phases"] = measure(target_class(args), args)
    if "matmul_peak_flops" in report:
        # The best product rate seen in this run is the least disturbed by other processes.
        seen = [r.get("matmul_peak_flops_after", 0) for r in report["phases"].values()]
        report["matmul_peak_flops"] = max([report["matmul_peak_flops"], *seen])
        for result in report["phases"].values():
            add_floor(result, report["matmul_peak_flops"])
        print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()

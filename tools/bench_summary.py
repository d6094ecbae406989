"""What ``tools.bench_train`` reports: the FLOPs of one SRCNN training step (by ``FLOP_RULE``), the
result dict it writes to ``--out`` and the one-table summary it prints."""
import datetime
import os
import statistics

from core.machine import cpu_model
from core.names import BASELINE as PAPER_BASELINE
from core.names import variant

PEAK_RULE = ("best of 5 numpy float32 2048x2048 matrix products in the Caffe worker (numpy's BLAS is "
             "the OpenBLAS Caffe loads), same thread count: the dense fp32 rate this machine attains")
FLOP_RULE = ("convolutions only, 2 FLOPs per multiply-add; forward = sum over conv layers of "
             "N*C_out*H_out*W_out*C_in*k*k MACs; backward = weight gradient of every conv (= its forward "
             "MACs) + input gradient of conv2 and conv3 (= their forward MACs; conv1's input, the data, "
             "needs no gradient); biases, activations, loss and the solver update are not counted")


# ----------------------------------------------------------------------------------------------
# FLOPs


def conv_shapes(cfg):
    """(name, c_in, c_out, kernel, out_side) of the three convolutions at the training patch size."""
    side1 = cfg.patch - cfg.f1 + 1
    side2 = side1 - cfg.f2 + 1
    side3 = side2 - cfg.f3 + 1
    return [("conv1", 1, cfg.n1, cfg.f1, side1),
            ("conv2", cfg.n1, cfg.n2, cfg.f2, side2),
            ("conv3", cfg.n2, 1, cfg.f3, side3)]


def train_flops(cfg, batch=None):
    """FLOPs of one training iteration by FLOP_RULE: {layer: {"forward", "backward"}} and totals."""
    batch = cfg.batch_train if batch is None else batch
    out = {}
    for i, (name, c_in, c_out, k, side) in enumerate(conv_shapes(cfg)):
        fwd = 2 * batch * c_out * side * side * c_in * k * k
        out[name] = {"forward": fwd, "backward": fwd if i == 0 else 2 * fwd}
    out["forward"] = sum(v["forward"] for v in out.values())
    out["backward"] = sum(v["backward"] for k, v in out.items() if k.startswith("conv"))
    out["total"] = out["forward"] + out["backward"]
    return out


# ----------------------------------------------------------------------------------------------
# Result and summary


def summarize(args, cfg, caffe_blocks, torch_blocks, layers, caffe_info, torch_info, load_before, load_after,
              peak=None):
    flops = train_flops(cfg)
    gflop = flops["total"] / 1e9
    caffe_all = [t for block in caffe_blocks for t in block]
    torch_all = [t for block in torch_blocks for t in block]
    caffe_ms, torch_ms = statistics.median(caffe_all), statistics.median(torch_all)
    caffe_gflops, torch_gflops = gflop / (caffe_ms / 1e3), gflop / (torch_ms / 1e3)
    per_layer = layers["per_layer_ms"]
    for name, counts in flops.items():
        if name in per_layer:  # achieved rate of each convolution
            for phase in ("forward", "backward"):
                ms = per_layer[name][phase]
                per_layer[name][f"{phase}_gflops"] = counts[phase] / 1e9 / (ms / 1e3) if ms > 0 else None
    return {
        "caffe_ms": caffe_ms,
        "torch_ms": torch_ms,
        "ratio": caffe_ms / torch_ms,
        "caffe_ms_all": caffe_all,
        "torch_ms_all": torch_all,
        "caffe_ms_min": min(caffe_all),
        "torch_ms_min": min(torch_all),
        # Wall time per step, as a run's ms/iteration (tools.train) counts it: on a shared machine
        # the mean sits above the median by what other processes took.
        "caffe_ms_mean": statistics.fmean(caffe_all),
        "torch_ms_mean": statistics.fmean(torch_all),
        "ratio_per_repeat": [statistics.median(c) / statistics.median(t)
                             for c, t in zip(caffe_blocks, torch_blocks)],
        "gflop_per_iter": gflop,
        "gflop_per_layer": {k: {p: v[p] / 1e9 for p in ("forward", "backward")}
                            for k, v in flops.items() if k.startswith("conv")},
        "flop_rule": FLOP_RULE,
        "caffe_gflops": caffe_gflops,
        "torch_gflops": torch_gflops,
        "peak": None if peak is None else {**peak, "rule": PEAK_RULE,
                                           "caffe_fraction": caffe_gflops / peak["gflops"],
                                           "torch_fraction": torch_gflops / peak["gflops"]},
        "threads": {"requested": args.threads, "cpu_count": os.cpu_count(),
                    "caffe": {k: caffe_info.get(k) for k in
                              ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "openblas_get_num_threads")},
                    "torch": {k: torch_info.get(k) for k in
                              ("set_num_threads", "interop_threads", "OMP_NUM_THREADS")}},
        "per_layer_ms": per_layer,
        "caffe_step_parts_ms": layers["parts_ms"],
        "act": args.act,
        "solver": args.solver,
        "batch": cfg.batch_train,
        "patch": cfg.patch,
        "label": cfg.label,
        "iters": args.iters,
        "repeats": args.repeats,
        "fresh_workers_per_repeat": not getattr(args, "same_workers", False),
        "warmup": args.warmup,
        "torch_version": torch_info.get("torch_version"),
        "blas": {"caffe": caffe_info.get("libraries"),
                 "openblas_config": caffe_info.get("openblas_config"),
                 "openblas_core": caffe_info.get("openblas_core"),
                 "torch": f"{torch_info.get('blas')} (BLAS_INFO), mkldnn={torch_info.get('mkldnn')}",
                 "torch_libraries": torch_info.get("libraries")},
        "cpu": cpu_model(),
        "loadavg_before_after": [list(load_before), list(load_after)],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def summary_table(result):
    """The human summary: one table, and a line naming Caffe's three costliest layer passes."""
    threads = result["threads"]
    rows = [("caffe", result["caffe_ms"], result["caffe_ms_min"], result.get("caffe_ms_mean"),
             result["caffe_gflops"],
             threads["caffe"]["openblas_get_num_threads"] or threads["caffe"]["OPENBLAS_NUM_THREADS"]),
            ("torch", result["torch_ms"], result["torch_ms_min"], result.get("torch_ms_mean"),
             result["torch_gflops"], threads["torch"]["set_num_threads"])]
    extra = f" ({' '.join(result['overrides'])})" if result.get("overrides") else ""
    lines = [f"SRCNN train step: act {result['act']}, solver {result['solver']}{extra}, batch {result['batch']}, "
             f"{result['gflop_per_iter']:.3f} GFLOP/iter, {result['repeats']}x{result['iters']} iters each",
             f"{'engine':<8}{'median ms':>11}{'min ms':>9}{'mean ms':>9}{'GFLOP/s':>9}{'threads':>9}"]
    for name, med, low, mean, rate, n in rows:
        mean = "" if mean is None else f"{mean:.1f}"  # results written before the mean was kept
        lines.append(f"{name:<8}{med:>11.1f}{low:>9.1f}{mean:>9}{rate:>9.2f}{str(n):>9}")
    lines.append(f"ratio caffe/torch (medians): {result['ratio']:.2f}")
    if result.get("peak"):
        peak = result["peak"]
        lines.append(f"machine peak (large fp32 GEMM, same threads): {peak['gflops']:.0f} GFLOP/s; "
                     f"caffe {100 * peak['caffe_fraction']:.0f}%, torch {100 * peak['torch_fraction']:.0f}% of it")
    if result.get("gpu"):
        g = result["gpu"]
        torch_part = (f", torch {g['torch_ms']:.3f} ms, ratio caffe/torch {g['ratio']:.2f}"
                      if "torch_ms" in g else ", torch: not measured (no CUDA torch)")
        lines.append(f"GPU {g['device']}: caffe {g['caffe_ms']:.3f} ms ({g['caffe_speedup_over_cpu']:.1f}x "
                     f"its CPU step){torch_part}")
    passes = [(v[p], f"{k} {short}") for k, v in result["per_layer_ms"].items()
              for p, short in (("forward", "fwd"), ("backward", "bwd"))]
    passes.append((result["caffe_step_parts_ms"]["apply_update"], "solver update"))
    top = ", ".join(f"{label} {ms:.1f} ms" for ms, label in sorted(passes, reverse=True)[:3])
    lines.append(f"caffe top cost centres: {top}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Configurations side by side

BASELINE = variant(*PAPER_BASELINE)  # the other configurations' steps are compared to it
# Configurations also compared with the baseline net built the same way (like for like), and the
# baselines whose fraction of the attainable rate is reported.
PAIRED_BASELINES = {"rrelu_nesterov_conv": "relu_sgd_conv"}
PEAK_REPORTED = (BASELINE, "relu_sgd_conv")
TARGETS = {"fraction_of_peak": 0.75, "step_ratio": 1.2}  # the project's goals for a step (docs/performance.md)


def step_ratios(result, caffe_blocks, name, base):
    """``name``'s Caffe step over ``base``'s: the ratio of the medians over all steps, and per
    repeat (the two blocks of a repeat ran one after the other), with its spread."""
    per_repeat = [statistics.median(b) / statistics.median(a)
                  for a, b in zip(caffe_blocks[base], caffe_blocks[name])]
    return {"step_ratio": result[name]["caffe_ms"] / result[base]["caffe_ms"],
            "step_ratio_per_repeat": per_repeat,
            "step_ratio_range": [min(per_repeat), max(per_repeat)]}


def compare(result, caffe_blocks):
    """Each configuration's Caffe step against the baseline's (step_ratios), and against its
    like-for-like baseline where it has one (``paired``); the baselines' fractions of the
    attainable rate. Empty without the baseline."""
    if BASELINE not in result:
        return {}
    out = {"baseline": BASELINE, "targets": TARGETS,
           "baseline_fraction_of_peak": (result[BASELINE]["peak"] or {}).get("caffe_fraction"),
           "fraction_of_peak": {name: (result[name]["peak"] or {}).get("caffe_fraction")
                                for name in PEAK_REPORTED if name in result}}
    for name in caffe_blocks:
        if name == BASELINE:
            continue
        out[name] = step_ratios(result, caffe_blocks, name, BASELINE)
        paired = PAIRED_BASELINES.get(name)
        if paired in caffe_blocks:
            out[name]["paired"] = {"baseline": paired,
                                   **step_ratios(result, caffe_blocks, name, paired)}
    return out


def ratio_line(name, base, c):
    low, high = c["step_ratio_range"]
    return (f"{name} / {base} step: {c['step_ratio']:.2f} (per repeat {low:.2f}-{high:.2f}; "
            f"target <= {TARGETS['step_ratio']})")


def summary_tables(result):
    """The human summary of a run over several configurations: a table each, then the comparison."""
    names = [k for k in result if k != "comparison"]
    parts = [summary_table(result[name]) for name in names]
    comparison = result.get("comparison") or {}
    lines = []
    for name, fraction in (comparison.get("fraction_of_peak") or {}).items():
        if fraction is not None:
            lines.append(f"{name}: {100 * fraction:.0f}% of the attainable rate "
                         f"(target {100 * TARGETS['fraction_of_peak']:.0f}%)")
    for name in names:
        if name in comparison:
            lines.append(ratio_line(name, BASELINE, comparison[name]))
            if "paired" in comparison[name]:
                paired = comparison[name]["paired"]
                lines.append(ratio_line(name, paired["baseline"], paired))
    return "\n\n".join(parts + (["\n".join(lines)] if lines else []))

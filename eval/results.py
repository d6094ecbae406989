"""Scoring runs against bicubic, and the tables that show it (JSON, CSV, Fig. 5-style Markdown)."""
import csv
import io

from core.config import ROOT
from core.run_files import final_snapshot, read_manifest
from eval.infer import SRNet
from eval.score import score_method


def run_model(run_dir):
    """(label, deploy prototxt, final caffemodel) of a run directory."""
    manifest, deploy, caffemodel = final_snapshot(run_dir)
    return f"{manifest['act']}_{manifest['solver']}", str(deploy), str(caffemodel)


def dataset_runs(dataset):
    """Run directories of a data set that have a final snapshot, sorted by name."""
    return [p.parent for p in sorted((ROOT / "runs" / dataset).glob("*/manifest.json"))
            if (read_manifest(p.parent) or {}).get("snapshots")]


def evaluate(hr_images, runs, scale, engine, border):
    """{"scale", "methods"}: bicubic first, then each run's final weights."""
    methods = {"bicubic": score_method(hr_images, lambda up: up, scale=scale)}
    for run_dir in runs:
        label, deploy, model = run_model(run_dir)
        net = SRNet(deploy, model, engine=engine, border=border)
        methods[label] = score_method(hr_images, net, scale=scale) | {"run": str(run_dir),
                                                                      "caffemodel": model}
    return {"scale": scale, "methods": methods}


def csv_text(result):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", "image", "psnr", "ssim"])
    for method, r in result["methods"].items():
        for row in r["images"] + [dict(r["mean"], name="mean")]:
            writer.writerow([method, row["name"], f"{row['psnr']:.4f}", f"{row['ssim']:.4f}"])
    return out.getvalue()


def markdown_table(result, title):
    """Fig. 5 layout: one row per test image (and the mean), PSNR/SSIM per method."""
    methods = list(result["methods"])
    head = "| image | " + " | ".join(f"{m} PSNR | {m} SSIM" for m in methods) + " |"
    rule = "|---" * (1 + 2 * len(methods)) + "|"
    names = [row["name"] for row in result["methods"]["bicubic"]["images"]]
    lines = [f"### {title} (x{result['scale']})", "", head, rule]
    for i, name in enumerate(names + ["**mean**"]):
        cells = []
        for m in methods:
            r = result["methods"][m]
            row = r["mean"] if i == len(names) else r["images"][i]
            cells += [f"{row['psnr']:.2f}", f"{row['ssim']:.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

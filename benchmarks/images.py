"""Images/s of the embedded image models: PyTorch eager vs plain onnxruntime vs aigc_engine.

Every system does the whole job a user asks for — draw the latents, run the generator,
turn its output into uint8 (n, H, W, C) pixels — at batch 1, 64 and 256, with the same
thread count. PyTorch runs the same architecture as the exported graph (freshly
initialised: speed does not depend on the weights' values); onnxruntime and aigc_engine
run the same .onnx file. Ratios are aigc_engine over each peer; the last column is the
share of the fp32 GEMM peak (numpy's matmul of 2048² matrices at the same thread count,
through threadpoolctl) reached by aigc_engine.

    python benchmarks/images.py [--quick] [--json results.json] [--csv results.csv] [--plot DIR]
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort

from common import Records, describe_peak, gemm_peak_flops, interleaved_medians, machine, parser, peak_share

from aigc_engine import ImageGenerator
from aigc_engine.artifacts.artifact import IMAGE_FAMILIES
from aigc_engine.artifacts.registry import MODELS_DIR, embedded_names
from aigc_engine.artifacts.schema import IMAGE_INPUT, IMAGE_OUTPUT, VAE_ENCODER_INPUT

BATCHES = (1, 64, 256)


def generator_graph(path) -> onnx.ModelProto:
    """The file's z → images graph: a VAE's file also holds its encoder, which sampling never runs."""
    model = onnx.load(str(path))
    if any(i.name == VAE_ENCODER_INPUT for i in model.graph.input):
        model = onnx.utils.Extractor(model).extract_model([IMAGE_INPUT], [IMAGE_OUTPUT])
    return model


def graph_flops_per_image(path) -> float:
    """Multiply-adds ×2 of the MatMul/Gemm/Conv/ConvTranspose nodes for one image."""
    model = generator_graph(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    flops = 0.0
    for node in model.graph.node:
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        if w is None:
            continue
        if node.op_type in ("MatMul", "Gemm"):
            flops += 2 * np.prod(w)
        elif node.op_type == "Conv":
            flops += 2 * np.prod(w) * np.prod(shapes[node.output[0]][2:])
        elif node.op_type == "ConvTranspose":
            flops += 2 * np.prod(w) * np.prod(shapes[node.input[0]][2:])
    return float(flops)


def torch_system(name: str, threads: int):
    try:
        import torch
        from aigc_export import DEFAULT_CONFIGS, build_model
    except ImportError as error:
        print(f"  PyTorch eager: skipped ({error.name} is not installed)")
        return None
    torch.set_num_threads(threads)
    generator = ImageGenerator.load(name)
    # the network's own keys: a VAE's config also carries its latent prior (latent_prior), a
    # distribution to draw z from, not a layer (torch draws standard normals: the same work)
    config = {k: v for k, v in generator.artifact.config.items() if k in DEFAULT_CONFIGS[generator.family]}
    module = build_model(generator.family, config).export_module.eval()
    seed = torch.Generator().manual_seed(0)

    def run(batch: int) -> np.ndarray:
        with torch.inference_mode():
            z = torch.randn(batch, generator.latent_dim, generator=seed)
            images = module(z)
            pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            return pixels.contiguous().numpy()
    return run


def onnxruntime_system(path, latent_dim: int, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(generator_graph(path).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)

    def run(batch: int) -> np.ndarray:
        z = rng.standard_normal((batch, latent_dim), dtype=np.float32)
        (images,) = session.run(["images"], {"z": z})
        return np.clip(np.rint((images + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return run


def main() -> None:
    args = parser(__doc__).parse_args()
    os.environ["AIGC_NUM_THREADS"] = str(args.threads)
    records = Records(machine(args.threads))
    names = embedded_names(IMAGE_FAMILIES)
    if not names:
        sys.exit("no embedded image models are installed")
    batches = (1, 64) if args.quick else BATCHES
    rounds, block_seconds = (2, 0.2) if args.quick else (5, 0.5)
    peak = gemm_peak_flops(args.threads)
    print(describe_peak(peak, args.threads, records))
    header = (f"{'model':<14} {'batch':>5} {'torch img/s':>12} {'ort img/s':>10} {'aigc img/s':>11} "
              f"{'vs torch':>9} {'vs ort':>7} {'% peak':>7}")
    print(header)
    print("-" * len(header))
    for name in names:
        path = MODELS_DIR / f"{name}.onnx"
        ours = ImageGenerator.load(name)
        flops = graph_flops_per_image(path)
        systems = {"aigc_engine": lambda b, g=ours: g.sample(b, seed=0, batch_size=b),
                   "onnxruntime": onnxruntime_system(path, ours.latent_dim, args.threads),
                   "pytorch-eager": torch_system(name, args.threads)}
        for batch in batches:
            runs = {system: (lambda run=run: run(batch)) for system, run in systems.items() if run is not None}
            rate = {system: batch / seconds
                    for system, seconds in interleaved_medians(runs, rounds, block_seconds).items()}
            for system, value in rate.items():
                records.add("images", system, {"model": name, "batch": batch, "threads": args.threads},
                            value, "images/s")
            vs_torch = f"{rate['aigc_engine'] / rate['pytorch-eager']:.2f}x" if "pytorch-eager" in rate else "-"
            torch_rate = f"{rate['pytorch-eager']:.0f}" if "pytorch-eager" in rate else "-"
            print(f"{name:<14} {batch:>5} {torch_rate:>12} {rate['onnxruntime']:>10.0f} {rate['aigc_engine']:>11.0f} "
                  f"{vs_torch:>9} {rate['aigc_engine'] / rate['onnxruntime']:>6.2f}x "
                  f"{peak_share(rate['aigc_engine'] * flops, peak):>7}")
    records.save(args)


if __name__ == "__main__":
    main()

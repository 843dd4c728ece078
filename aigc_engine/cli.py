"""The `aigc` command line: models, sample, eval, reconstruct, generate, chat, train, export, import-hf, serve,
batch.

Bad input of any kind ends with one line on stderr, `aigc: error: ...`, and exit
status 1 (2 for unparseable arguments), never a traceback. AIGC_DEBUG=1 shows the
traceback of unexpected errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from . import __version__
from .artifacts.schema import CLASSIFIER, IMAGE_FAMILIES, TEXT_FAMILIES, WEIGHT_DTYPES
from .errors import AigcError

KV_DTYPES = ("float32", "bfloat16")  # text/native.py's KV_DTYPES, named here without importing the extension


def _cmd_models(args: argparse.Namespace) -> None:
    from .artifacts.registry import embedded_artifacts

    artifacts = embedded_artifacts()
    if args.json:
        print(json.dumps([{"name": a.path.stem, "family": a.family, "description": a.description,
                           "config": a.config, "provenance": a.provenance, "bytes": a.size_bytes}
                          for a in artifacts], indent=2))
        return
    if not artifacts:
        print("no embedded models installed")
    for a in artifacts:
        size = f"{a.size_bytes / 2**20:.1f} MB"
        print(f"{a.path.stem:<16} {a.family:<6} {size:>8}  {a.description}")


def _cmd_sample(args: argparse.Namespace) -> None:
    from .images import memory
    from .images.generator import ImageGenerator
    from .images.png import check_writable, output_format, save_grid
    from .ops import fresh_seed

    output_format(check_writable(args.output))
    if args.nrow is not None and args.nrow < 1:
        raise AigcError(f"--nrow: expected an integer >= 1, got {args.nrow}")
    generator = ImageGenerator.load(args.model, device=args.device)
    seed = args.seed if args.seed is not None else fresh_seed()
    if args.n >= 1:  # the grid is a second copy of the images
        memory.check_fits(f"a grid of n={args.n} images", 2 * args.n * math.prod(generator.image_shape))
    started = time.perf_counter()
    if args.interpolate:
        images = generator.interpolate(args.interpolate[0], args.interpolate[1], args.n, args.truncation,
                                       args.batch_size)
    else:
        images = generator.sample(args.n, seed, args.truncation, args.batch_size)
    elapsed = time.perf_counter() - started
    save_grid(images, args.output, nrow=args.nrow)
    seeded = "" if args.interpolate else f" [seed {seed}]"
    print(f"wrote {len(images)} images ({'×'.join(map(str, generator.image_shape))}) to {args.output} "
          f"in {elapsed:.2f} s{seeded}", file=sys.stderr)


def _cmd_eval(args: argparse.Namespace) -> None:
    from .artifacts.artifact import read_artifact
    from .artifacts.registry import embedded_names, resolve

    if args.all == (args.model is not None):
        raise AigcError("eval: give one MODEL, or --all for every embedded model" if args.all is False
                        else f"eval: give --all or a MODEL, not both (got {args.model!r})")
    if args.n is not None and args.n < 1:
        raise AigcError(f"-n: expected an integer >= 1, got {args.n}")
    if args.windows is not None and args.windows < 1:
        raise AigcError(f"--windows: expected an integer >= 1, got {args.windows}")
    artifacts = [read_artifact(resolve(name)) for name in (embedded_names() if args.all else [args.model])]
    if args.truncation is not None and not args.all and artifacts[0].family in TEXT_FAMILIES:
        raise AigcError("--truncation: applies to image models, not to a text model")
    names = [a.path.stem if args.all else args.model for a in artifacts]
    images = [(name, a) for name, a in zip(names, artifacts) if a.family in IMAGE_FAMILIES]
    texts = [(name, a) for name, a in zip(names, artifacts) if a.family in TEXT_FAMILIES]
    rows = _eval_images(images, args) + _eval_texts(texts, args)
    if args.json:
        print(json.dumps(dict(rows), indent=2))
        return
    image_rows = [(name, r) for name, r in rows if "frechet_distance" in r]
    if image_rows:
        print(f"{'':<22} {'n':>6} {'Fréchet ↓':>10} {'classes':>8} {'entropy':>8} {'confidence':>11} "
              f"{'recon MSE ↓':>12} {'ELBO bits/dim ↓':>16}")
    for name, r in image_rows:
        vae = (f" {r['reconstruction_mse']:>12.4f} {r['elbo_bits_per_dim']:>16.4f}"
               if "reconstruction_mse" in r else "")
        print(f"{name:<22} {r['n']:>6} {r['frechet_distance']:>10.2f} {r['classes_present']:>5}/10 "
              f"{r['class_entropy_bits']:>8.3f} {r['mean_confidence']:>11.3f}{vae}")
    text_rows = [(name, r) for name, r in rows if "heldout_bits_per_byte" in r]
    if text_rows:
        print(f"{'':<22} {'bits/byte ↓':>11} {'windows':>8} {'parse rate':>11} {'complete':>9} {'samples':>8}")
    for name, r in text_rows:
        print(f"{name:<22} {r['heldout_bits_per_byte']:>11.4f} {r['heldout_windows']:>8} {r['parse_rate']:>11.3f} "
              f"{r['parse_complete']:>9} {r['parse_samples']:>8}")


def _eval_images(models: list, args: argparse.Namespace) -> list:
    """(name, figures) for each image model, then the real held-out digits' row."""
    if not models:
        return []
    from .images.generator import ImageGenerator
    from .images.quality import DigitClassifier, evaluate_model

    classifier = DigitClassifier()
    n = 5000 if args.n is None else args.n
    rows = [(name, evaluate_model(ImageGenerator(artifact), n, args.seed, args.truncation, classifier))
            for name, artifact in models]
    return rows + [("real held-out digits", classifier.heldout_report().as_dict())]


def _eval_texts(models: list, args: argparse.Namespace) -> list:
    if not models:
        return []
    from .text.generator import TextGenerator
    from .text.quality import DEFAULT_PARSE_SAMPLES, evaluate_text_model

    n = DEFAULT_PARSE_SAMPLES if args.n is None else args.n
    return [(name, evaluate_text_model(TextGenerator(artifact), n, args.seed, args.windows))
            for name, artifact in models]


def _cmd_reconstruct(args: argparse.Namespace) -> None:
    from .images.generator import ImageGenerator
    from .images.png import check_writable, output_format, read_image, save_grid, split_grid

    output_format(check_writable(args.output))
    generator = ImageGenerator.load(args.model)
    image = read_image(args.input)
    _, height, width = generator.image_shape
    single = image.shape[:2] == (height, width)
    cells = image[None] if single else split_grid(image, height, width)
    columns = 1 if single else (image.shape[1] - 2) // (width + 2)
    reconstructions = generator.reconstruct(cells, seed=args.seed)
    save_grid(reconstructions, args.output, nrow=columns, padding=0 if single else 2)
    drawn = "posterior mean" if args.seed is None else f"seed {args.seed}"
    print(f"wrote {len(reconstructions)} reconstruction{'s' * (len(reconstructions) > 1)} "
          f"({width}×{height}) to {args.output} [{drawn}]", file=sys.stderr)


def _sampling_params(args: argparse.Namespace, seed: int):
    """The sampling flags of `generate` and `chat` → SamplingParams: one flag per field, named
    after it (logprobs: generate's, printed with --json)."""
    from .text.sampling import SamplingParams

    bias: dict[int, float] = {}
    for token, value in args.logit_bias:
        if token in bias:
            raise AigcError(f"--logit-bias: token {token} given twice ({bias[token]:g} and {value:g})")
        bias[token] = value
    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                          seed=seed, stop=tuple(args.stop), logprobs=getattr(args, "logprobs", None),
                          logit_bias=bias,
                          ignore_eos=args.ignore_eos, truncate_prompt=args.truncate_prompt,
                          token_healing=not args.no_token_healing)


def _completion_json(completion) -> str:
    """One line of `aigc generate --json`: the sample, or its error."""
    line = {"prompt": completion.prompt, "text": completion.text, "token_ids": completion.token_ids,
            "finish_reason": completion.finish_reason, "seed": completion.seed,
            "prompt_tokens": completion.prompt_tokens}
    if completion.logprobs is not None:
        line["logprobs"] = [{"token_id": t.token_id, "text": t.text, "logprob": t.logprob,
                             "top": [{"token_id": i, "text": text, "logprob": lp} for i, text, lp in t.top]}
                            for t in completion.logprobs]
    if completion.error:
        line["error"] = _cli_wording(completion.error)
    return json.dumps(line)


def _cmd_generate(args: argparse.Namespace) -> None:
    from .ops import fresh_seed, sample_seed
    from .text.generator import TextGenerator

    if args.n < 1:
        raise AigcError(f"-n: expected an integer >= 1, got {args.n}")
    if args.logprobs is not None and not args.json:
        raise AigcError("--logprobs: log-probabilities are printed with --json (one JSON line per sample)")
    first_seed = args.seed if args.seed is not None else fresh_seed()
    params = [_sampling_params(args, sample_seed(first_seed, i)) for i in range(args.n)]
    prompts = [sys.stdin.read() if p == "-" else p for p in args.prompt]
    generator = TextGenerator.load(args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                                   kv_dtype=args.kv_dtype)
    jobs = [(prompt, p) for prompt in prompts for p in params]
    if len(jobs) == 1 and not args.json:  # one sample: streamed as it is produced
        prompt, p = jobs[0]
        pieces = generator.stream(prompt, p)
        print(f"[seed {p.seed}]", file=sys.stderr)
        sys.stdout.write(prompt)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    completions = generator.generate([prompt for prompt, _ in jobs], [p for _, p in jobs])
    failed = 0
    for (prompt, p), completion in zip(jobs, completions):
        failed += bool(completion.error)
        if args.json:
            print(_completion_json(completion), flush=True)
        elif completion.error:
            print(f"aigc: error: prompt {prompt[:40]!r}: {_cli_wording(completion.error)}", file=sys.stderr)
        else:
            print(f"----- [seed {p.seed}, {len(completion.token_ids)} tokens, {completion.finish_reason}]",
                  file=sys.stderr)
            print(prompt + completion.text, flush=True)
    if failed:
        raise AigcError(f"{failed} of {len(jobs)} prompts failed (see above)")


def _cmd_chat(args: argparse.Namespace) -> None:
    """One user message a line from stdin; each reply streamed to stdout on its own line.
    Reply i uses seed (SEED + i) mod 2**64, so a seeded conversation replays exactly."""
    from .ops import fresh_seed, sample_seed
    from .text.generator import TextGenerator

    generator = TextGenerator.load(args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                                   kv_dtype=args.kv_dtype, chat_template=args.chat_template)
    first_seed = args.seed if args.seed is not None else fresh_seed()
    interactive = sys.stdin.isatty()
    print(f"[seed {first_seed}]" + ("  (one message a line; /exit or Ctrl-D ends)" if interactive else ""),
          file=sys.stderr)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        params = _sampling_params(args, sample_seed(first_seed, sum(m["role"] == "assistant" for m in messages)))
        reply = []
        for piece in generator.chat_stream(messages, params):
            sys.stdout.write(piece)
            sys.stdout.flush()
            reply.append(piece)
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})


def _training_module():
    try:
        import aigc_export
    except ImportError as error:
        raise AigcError(f"training needs the 'train' extra ({error.name} is missing): "
                        "pip install 'aigc-engine[train]'") from None
    return aigc_export


def _cmd_train(args: argparse.Namespace) -> None:
    if args.nproc is not None and args.nproc < 1:
        raise AigcError(f"--nproc: expected an integer >= 1, got {args.nproc}")
    aigc_export = _training_module()
    if args.family in TEXT_FAMILIES:
        summary = aigc_export.launch(args.nproc, aigc_export.train_text_model, **_text_options(args))
    elif args.family == "classifier":
        if args.nproc not in (None, 1) or aigc_export.launched_by_torchrun():
            raise AigcError("--nproc: the classifier trains in one process")
        summary = aigc_export.train_classifier(args.out, steps=args.steps, seed=args.seed, progress=not args.quiet)
    else:
        if args.data is not None and len(args.data) > 1:
            raise AigcError(f"--data: an image model trains on one source, got {len(args.data)}")
        options = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                     ("latent_dim", args.latent_dim), ("augment", args.augment or None),
                                     ("average_generator", args.average_generator),
                                     ("lr_decay_from", args.lr_decay_from),
                                     ("prior_components", args.prior_components)) if v is not None}
        summary = aigc_export.launch(
            args.nproc, aigc_export.train_image_model, family=args.family,
            data=args.data[0] if args.data else "mnist", out=args.out, seed=args.seed,
            image_size=args.image_size, channels=args.channels, config=_config_option(args),
            checkpoint_dir=args.checkpoint_dir, resume=args.resume, progress=not args.quiet, **options)
    if summary is not None:  # under torchrun, ranks other than 0 have nothing to report
        print(json.dumps(summary, indent=2, default=str))


def _config_option(args: argparse.Namespace) -> dict:
    if args.config is None:
        return {}
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as error:
        raise AigcError(f"--config: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise AigcError("--config: expected a JSON object such as '{\"n_layer\": 2}'")
    return config


def _text_options(args: argparse.Namespace) -> dict:
    config = _config_option(args)
    config.update({k: v for k, v in (("n_layer", args.n_layer), ("n_embd", args.n_embd), ("n_head", args.n_head),
                                     ("n_positions", args.context), ("hidden_size", args.hidden_size))
                   if v is not None})
    options = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                 ("seq_len", args.seq_len), ("warmup", args.warmup), ("vocab_size", args.vocab_size),
                                 ("eval_every", args.eval_every)) if v is not None}
    return {"family": args.family, "data": args.data, "out": args.out, "config": config, "seed": args.seed,
            "checkpoint_dir": args.checkpoint_dir, "resume": args.resume, "progress": not args.quiet, **options}


def _cmd_export(args: argparse.Namespace) -> None:
    _training_module().export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def _cmd_import_hf(args: argparse.Namespace) -> None:
    from .artifacts.hf_import import import_hf

    import_hf(args.directory, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def _engine_options(args: argparse.Namespace) -> dict:
    """The text engines' options that `serve` and `batch` both take, those given."""
    if args.device == "cuda" and args.ray:
        raise AigcError("--device cuda works without --ray only (Ray replicas are not given GPUs yet)")
    return {k: v for k, v in (("backend", args.backend), ("device", args.device), ("dtype", args.dtype),
                              ("kv_cache_mb", args.kv_cache_mb), ("kv_dtype", args.kv_dtype),
                              ("max_batch_size", args.max_batch_size))
            if v is not None}


def _cmd_serve(args: argparse.Namespace) -> None:
    try:
        from .serving.app import STREAM_INTERVAL_SECONDS, Server
        from .serving.auth import api_key_of
        from .serving.run import bind, check_allowed_origins, load_models, serve
    except ImportError as error:
        raise AigcError(f"serve needs the 'serve' extra ({error.name} is missing): "
                        "pip install 'aigc-engine[serve]'") from None
    for flag, value in (("--max-queued", args.max_queued), ("--max-body-bytes", args.max_body_bytes),
                        ("--max-batch-size", args.max_batch_size)):
        if value is not None and value < 1:
            raise AigcError(f"{flag}: expected an integer >= 1, got {value}")
    if args.kv_cache_mb is not None and not (math.isfinite(args.kv_cache_mb) and args.kv_cache_mb > 0):
        raise AigcError(f"--kv-cache-mb: expected a number of MiB > 0, got {args.kv_cache_mb}")
    interval = STREAM_INTERVAL_SECONDS if args.stream_interval is None else args.stream_interval
    if not 0 <= interval <= 10:  # also refuses nan
        raise AigcError(f"--stream-interval: expected 0..10 seconds, got {interval}")
    if not 0 <= args.port <= 65535:
        raise AigcError(f"--port: expected 0..65535 (0: any free port), got {args.port}")
    api_key = api_key_of(args.api_key)
    check_allowed_origins(args.allowed_origins)
    _check_ray_flags(args)
    options = _engine_options(args)
    if args.chat_template is not None:
        options["chat_template"] = os.path.abspath(args.chat_template) if args.ray else args.chat_template
    server_options = {"max_body_bytes": args.max_body_bytes, "stream_interval": interval, "api_key": api_key,
                      "allowed_origins": args.allowed_origins}
    if args.ray:
        _serve_on_ray(args, options, server_options)
        return
    sock = bind(args.host, args.port)
    try:
        text, images = load_models(args.model, args.max_queued, args.served_model_name, **options)
    except BaseException:
        sock.close()
        raise
    serve(Server(text, images, **server_options), sock, args.log_level)


def _serve_on_ray(args: argparse.Namespace, options: dict, server_options: dict) -> None:
    from .serving.ray_cluster import check_replicas, threads_per_replica
    from .serving.ray_serve import DEFAULT_START_TIMEOUT_SECONDS, build_app, deployment_options, serve_on_ray

    check_replicas(args.replicas)
    start_timeout = DEFAULT_START_TIMEOUT_SECONDS if args.start_timeout is None else args.start_timeout
    if not 0 < start_timeout < float("inf"):
        raise AigcError(f"--start-timeout: expected seconds > 0, got {args.start_timeout}")
    if args.port == 0:
        raise AigcError("--port: Ray Serve's proxy needs a fixed port with --ray, got 0")
    threads = threads_per_replica()
    deployment = deployment_options(args.replicas, args.min_replicas, args.max_replicas, threads, args.max_queued,
                                    args.max_batch_size)
    application = build_app(args.model, args.served_model_name, args.max_queued, options, server_options, deployment)
    most = deployment.get("autoscaling_config", {}).get("max_replicas", args.replicas)
    serve_on_ray(application, args.address, args.host, args.port, most * threads, args.log_level, start_timeout)


def _check_ray_flags(args: argparse.Namespace) -> None:
    if args.ray:
        return
    for flag, value, default in (("--address", args.address, None), ("--replicas", args.replicas, 1),
                                 ("--min-replicas", getattr(args, "min_replicas", None), None),
                                 ("--max-replicas", getattr(args, "max_replicas", None), None),
                                 ("--start-timeout", getattr(args, "start_timeout", None), None)):
        if value != default:
            raise AigcError(f"{flag} works with --ray only")


def _logit_bias(text: str) -> tuple[int, float]:
    token, _, bias = text.partition("=")
    try:
        return int(token), float(bias)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOKEN_ID=BIAS such as 50256=-100, got {text!r}") from None


def _cmd_batch(args: argparse.Namespace) -> None:
    try:
        from .serving.app import Server
        from .serving.batch import batch
        from .serving.run import load_models
    except ImportError as error:
        raise AigcError(f"batch needs the 'serve' extra ({error.name} is missing): "
                        "pip install 'aigc-engine[serve]'") from None
    _check_ray_flags(args)
    options = _engine_options(args)
    if args.chat_template is not None:
        options["chat_template"] = args.chat_template
    if args.ray:
        from .serving.ray_batch import batch_on_ray

        if "chat_template" in options:
            options["chat_template"] = os.path.abspath(options["chat_template"])
        ran, skipped = batch_on_ray(args.model, options, args.input, args.output, args.concurrency, args.quiet,
                                    args.replicas, args.address)
    else:
        text, images = load_models(args.model, 256, **options)
        try:
            ran, skipped = batch(Server(text, images), args.input, args.output, args.concurrency, args.quiet)
        finally:
            for engine in text.values():
                engine.close(cancel=True)
    print(f"aigc batch: wrote {ran} lines to {args.output}" +
          (f" ({skipped} already there were skipped)" if skipped else ""), file=sys.stderr)


def _seed(text: str) -> int:
    from .ops import check_seed

    try:
        return check_seed(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error) if "seed" in str(error) else f"not an integer: {text!r}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too."""

    def error(self, message: str):
        self.exit(2, f"aigc: error: {message} (see `{self.prog} --help`)\n")


def _text_flags() -> argparse.ArgumentParser:
    """The sampling and backend flags that `generate` and `chat` share."""
    p = argparse.ArgumentParser(add_help=False)
    # The defaults are SamplingParams', except temperature and top_p: see the README's
    # "Seeds and defaults" table, which tests/test_defaults.py holds this to.
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="0 = greedy (default 0.8, where the Python API and HTTP use 1.0, the model's own "
                        "distribution: a little colder reads better from small models)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0 = off)")
    p.add_argument("--top-p", type=float, default=0.95,
                   help="nucleus mass in (0, 1] (default 0.95, where the Python API and HTTP use 1.0 = off: "
                        "cutting the unlikely tail reads better from small models)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p × the top one (default 0)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 0, 1 = off (default 1)")
    p.add_argument("--seed", type=_seed, default=None,
                   help="an integer in [0, 2**64 - 1] (default: a fresh one, printed)")
    p.add_argument("--presence-penalty", type=float, default=0.0,
                   help="[-2, 2]: subtracted once from each token already generated (default 0 = off)")
    p.add_argument("--frequency-penalty", type=float, default=0.0,
                   help="[-2, 2]: subtracted per time each token was generated (default 0 = off)")
    p.add_argument("--logit-bias", type=_logit_bias, action="append", default=[], metavar="TOKEN_ID=BIAS",
                   help="add BIAS in [-100, 100] to a token's logit (repeatable; -100 bans the token)")
    p.add_argument("--stop", action="append", default=[], help="a string that ends the text (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past the end-of-text token")
    p.add_argument("--truncate-prompt", action="store_true", help="drop the oldest prompt tokens that do not fit")
    p.add_argument("--no-token-healing", action="store_true",
                   help="run a prompt that ends in whitespace as it is (default: its last token is re-chosen)")
    p.add_argument("--backend", default=None, choices=("native", "onnxruntime"),
                   help="default: native (an LSTM with --device cuda: onnxruntime)")
    p.add_argument("--dtype", default="float32", choices=WEIGHT_DTYPES,
                   help="how the native decoder stores the weights (default float32)")
    p.add_argument("--kv-dtype", default="float32", choices=KV_DTYPES,
                   help="how the native decoder's KV cache stores keys and values (default float32)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: the native GPT decoder (or onnxruntime's CUDA provider) on the GPU (default cpu)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aigc", description="Train, export and sample classic generative models.")
    parser.add_argument("--version", action="version", version=f"aigc-engine {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    text_flags = _text_flags()

    p = commands.add_parser("models", help="list the embedded models")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    p.set_defaults(run=_cmd_models)

    p = commands.add_parser("sample", help="sample images from an image model into one grid image (PNG, or the "
                                           "format -o names)")
    p.add_argument("model", help="an embedded model name (see `aigc models`) or a path to a .onnx file")
    p.add_argument("-n", type=int, default=64, help="how many images (default 64)")
    p.add_argument("--seed", type=_seed, default=None,
                   help="an integer in [0, 2**64 - 1]; image i is sample i of it (default: a fresh one, printed)")
    p.add_argument("--truncation", type=float, default=None,
                   help="redraw latent elements with |z| above this (> 0; default off)")
    p.add_argument("--interpolate", nargs=2, type=_seed, metavar=("SEED_A", "SEED_B"),
                   help="n images morphing from sample 0 of SEED_A to sample 0 of SEED_B")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default ⌈√n⌉)")
    p.add_argument("--batch-size", type=int, default=128, help="images per generator call (default 128)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("-o", "--output", default="samples.png",
                   help="image file to write (default samples.png), in the format its extension names: .png, or "
                        ".jpg, .webp, .bmp... where Pillow is installed; a new or a regular file, replaced whole; "
                        "a symbolic link, FIFO, device, socket or folder is refused")
    p.set_defaults(run=_cmd_sample)

    p = commands.add_parser("eval", help="measure a model's quality: digits with the shipped classifier (and a "
                                         "VAE's held-out reconstruction), text by held-out bits/byte and parse rate")
    p.add_argument("model", nargs="?", default=None, help="an embedded model name or a path (or --all)")
    p.add_argument("--all", action="store_true", help="every embedded model, one table per kind")
    p.add_argument("-n", type=int, default=None,
                   help="samples per model: generated digits (default 5000; at least 129: the Fréchet distance "
                        "needs more samples than the classifier's 128 features), or text samples from 'def' for "
                        "the parse rate (default 100)")
    p.add_argument("--windows", type=int, default=None,
                   help="text models: held-out windows to score, spread evenly (default: all of them)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the samples (text sample i: SEED + i) and of a VAE's posterior draws (default 0)")
    p.add_argument("--truncation", type=float, default=None, help="image models: as `aigc sample --truncation`")
    p.add_argument("--json", action="store_true", help="one JSON object: model name → its figures")
    p.set_defaults(run=_cmd_eval)

    p = commands.add_parser("reconstruct", help="encode a digit image (or a grid of them) with a VAE and decode it")
    p.add_argument("input", help="an image file: one image of the model's size, or a grid of them as `aigc sample` "
                                 "writes it (2-pixel padding); PNG read here, other formats through Pillow")
    p.add_argument("--model", default="digits-vae", help="a VAE with its encoder (default digits-vae)")
    p.add_argument("--seed", type=_seed, default=None,
                   help="decode a draw from each image's posterior, image i with latent sample i of SEED "
                        "(default: decode the posterior mean)")
    p.add_argument("-o", "--output", required=True,
                   help="the image file to write: the reconstructions in the input's layout (format by extension)")
    p.set_defaults(run=_cmd_reconstruct)

    p = commands.add_parser("generate", parents=[text_flags],
                            help="generate text from a text model, streamed to stdout")
    p.add_argument("model", help="an embedded text model (see `aigc models`), a path to a .onnx file, or a "
                                 "Hugging Face GPT-2 folder")
    p.add_argument("-p", "--prompt", action="append", required=True,
                   help="the prompt (repeat for several; '-' reads it from stdin)")
    p.add_argument("-n", type=int, default=1,
                   help="samples per prompt, with seeds SEED, SEED+1, ... mod 2**64 (default 1)")
    p.add_argument("--logprobs", type=int, default=None, metavar="N",
                   help="with --json: each token's log-probability and the N in [0, 20] most likely ones")
    p.add_argument("--json", action="store_true",
                   help="one JSON line per sample on stdout (prompt, text, token_ids, finish_reason, seed, "
                        "prompt_tokens; logprobs; error), nothing streamed")
    p.set_defaults(run=_cmd_generate)

    p = commands.add_parser("chat", parents=[text_flags],
                            help="chat with a text model: one message a line on stdin, replies streamed to stdout")
    p.add_argument("model", help="an embedded text model (see `aigc models`), a path to a .onnx file, or a "
                                 "Hugging Face GPT-2 folder")
    p.add_argument("--system", default=None, help="a system message that opens the conversation")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="a Jinja chat template (or a JSON file with a 'chat_template', as tokenizer_config.json) "
                        "instead of the model's own or the default one")
    p.set_defaults(run=_cmd_chat)

    p = commands.add_parser("train", help="train a model and export it (needs the 'train' extra)")
    p.add_argument("family", choices=IMAGE_FAMILIES + (CLASSIFIER,) + TEXT_FAMILIES)
    p.add_argument("--data", nargs="+", default=None, metavar="SOURCE",
                   help="images: mnist (MNIST 5k, default), digits (sklearn) or a folder of images; "
                        "gpt/lstm: text files, folders or globs (default: the Python standard library's source)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the family's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--augment", action="store_true",
                   help="gan/dcgan: the discriminator sees real and generated images through the same random "
                        "translation and cutout")
    p.add_argument("--average-generator", type=float, default=None, metavar="DECAY",
                   help="gan/dcgan: ship the moving average of the generator's weights (e.g. 0.999)")
    p.add_argument("--lr-decay-from", type=int, default=None, metavar="STEP",
                   help="gan/dcgan/vae: from this step the learning rate falls linearly, to 0 after the last step")
    p.add_argument("--prior-components", type=int, default=None, metavar="K",
                   help="vae: sample from a K-component Gaussian mixture fitted to the training images' "
                        "posterior means (default 20; 0: standard normal)")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--vocab-size", type=int, default=None, help="gpt/lstm: BPE vocabulary size (default 4096)")
    p.add_argument("--seq-len", type=int, default=None, help="gpt/lstm: tokens per training window (default 128)")
    p.add_argument("--warmup", type=int, default=None, help="gpt/lstm: warm-up steps (default steps/10, ≤ 200)")
    p.add_argument("--eval-every", type=int, default=None, help="gpt/lstm: held-out loss every N steps")
    p.add_argument("--n-layer", type=int, default=None)
    p.add_argument("--n-embd", type=int, default=None)
    p.add_argument("--n-head", type=int, default=None, help="gpt")
    p.add_argument("--context", type=int, default=None, help="gpt: context length n_positions (default 256)")
    p.add_argument("--hidden-size", type=int, default=None, help="lstm")
    p.add_argument("--config", default=None,
                   help="other model settings as a JSON object, e.g. gpt/lstm sizes, or a dcgan's "
                        "'{\"loss\": \"hinge\", \"d_norm\": \"spectral\"}' (keys: see README)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data-parallel training on N local processes (torch.distributed DDP, gloo); each takes "
                        "1/N of every batch. Under torchrun leave it out (see README)")
    p.add_argument("--out", required=True,
                   help="the .onnx file to write (for `classifier`: the folder for it and its reference statistics)")
    p.set_defaults(run=_cmd_train)

    p = commands.add_parser("export", help="export a training checkpoint to ONNX")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.set_defaults(run=_cmd_export)

    p = commands.add_parser("import-hf", help="convert a Hugging Face GPT-2 checkpoint folder to ONNX, offline")
    p.add_argument("directory", help="holds config.json, model.safetensors or pytorch_model.bin, and "
                                     "tokenizer.json or vocab.json + merges.txt")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.set_defaults(run=_cmd_import_hf)

    p = commands.add_parser("serve",
                            help="serve models over HTTP: OpenAI-compatible completions, chat completions, images")
    p.add_argument("model", nargs="+",
                   help="embedded model names, .onnx paths or Hugging Face GPT-2 folders (text and image models)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port (printed)")
    p.add_argument("--max-queued", type=int, default=256,
                   help="requests that may wait per text model; past it: 429 with Retry-After (default 256)")
    p.add_argument("--max-batch-size", type=int, default=None, help="requests decoded together (default 32)")
    p.add_argument("--backend", default=None, choices=("native", "onnxruntime"),
                   help="text backend (default: native; an LSTM with --device cuda: onnxruntime)")
    p.add_argument("--kv-cache-mb", type=float, default=None, help="native KV cache budget (default 512)")
    p.add_argument("--dtype", default=None, choices=WEIGHT_DTYPES,
                   help="native decoder weights (default float32)")
    p.add_argument("--kv-dtype", default=None, choices=KV_DTYPES,
                   help="native KV cache keys and values: bfloat16 holds twice the tokens (default float32)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cuda: the text models' decoders and the image models on the GPU (default cpu)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20,
                   help="larger request bodies get 413 (default 1 MiB); see the README's Limits for the others")
    p.add_argument("--stream-interval", type=float, default=None,
                   help="least seconds between two events of one stream; the text made in between comes "
                        "together, a request's end comes at once (default 0.05; 0: an event per piece)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health and /metrics "
                        "(default: $AIGC_API_KEY if set, else no key)")
    p.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="the names clients use, one per model argument in the same order "
                        "(default: the embedded name, or a path's file stem)")
    p.add_argument("--allowed-origins", nargs="+", default=None, metavar="ORIGIN",
                   help="browser origins allowed by CORS, e.g. https://app.example.com, or '*' (default: none)")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="a Jinja chat template for /v1/chat/completions, for every text model served, instead of "
                        "each model's own or the default one")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--ray", action="store_true",
                   help="serve from Ray Serve replicas behind Serve's proxy on --host/--port (needs the ray extra)")
    _ray_flags(p)
    p.add_argument("--min-replicas", type=int, default=None,
                   help="with --ray: autoscale between --min-replicas and --max-replicas on requests in flight")
    p.add_argument("--max-replicas", type=int, default=None, help="with --ray: see --min-replicas")
    p.add_argument("--start-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --ray: give up (and clean up) when Serve's proxy and every replica are not ready "
                        "after this long (default 600)")
    p.set_defaults(run=_cmd_serve)

    p = commands.add_parser("batch", help="run an OpenAI batch file (JSONL) through the models, in-process or "
                                     "over Ray actors (--ray)")
    p.add_argument("input", help="OpenAI batch request lines: custom_id, method, url, body")
    p.add_argument("output", help="OpenAI batch output lines, appended; a rerun skips the custom_ids already there")
    p.add_argument("--model", nargs="+", required=True,
                   help="the models the lines' bodies name (embedded names, .onnx paths or GPT-2 folders)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at once (default 64)")
    p.add_argument("--max-batch-size", type=int, default=None, help="requests decoded together (default 32)")
    p.add_argument("--backend", default=None, choices=("native", "onnxruntime"),
                   help="text backend (default: native; an LSTM with --device cuda: onnxruntime)")
    p.add_argument("--kv-cache-mb", type=float, default=None, help="native KV cache budget (default 512)")
    p.add_argument("--dtype", default=None, choices=WEIGHT_DTYPES, help="native decoder weights (default float32)")
    p.add_argument("--kv-dtype", default=None, choices=KV_DTYPES, help="native KV cache dtype (default float32)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cuda: the text models' decoders and the image models on the GPU (default cpu)")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="a Jinja chat template for /v1/chat/completions lines, instead of each model's own or the "
                        "default one")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--ray", action="store_true",
                   help="spread the lines over Ray actors, one engine each (needs the ray extra)")
    _ray_flags(p)
    p.set_defaults(run=_cmd_batch)
    return parser


def _ray_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="with --ray: join the Ray cluster at this address (host:port or 'auto'); "
                        "default: start a local Ray instance")
    p.add_argument("--replicas", type=int, default=1,
                   help="with --ray: engines, each in its own Ray actor with AIGC_NUM_THREADS threads "
                        "(default 1 replica of 1 thread)")


def _cli_wording(message: str) -> str:
    """An error message with the Python API's names of settings in the flags users type here:
    `truncate_prompt=True` → `--truncate-prompt`, `max_new_tokens` → `--max-new-tokens`."""
    import dataclasses

    from .errors import respell
    from .text.sampling import SamplingParams

    spellings = {}
    for f in dataclasses.fields(SamplingParams):
        flag = "--" + f.name.replace("_", "-")
        spellings[f"{f.name}=True" if f.type == "bool" else f.name] = flag
    return respell(message, spellings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("aigc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`aigc generate ... | head`): stop quietly, as a shell tool does
        # Python would flush stdout into the closed pipe again at exit and complain there.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except (ValueError, OSError) as error:  # AigcError is a ValueError
        print(f"aigc: error: {_cli_wording(str(error))}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 — the last line of defence: no traceback for users
        if os.environ.get("AIGC_DEBUG"):
            raise
        print(f"aigc: error: unexpected {type(error).__name__}: {error} (AIGC_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

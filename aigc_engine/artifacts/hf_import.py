"""A Hugging Face GPT-2 folder → our one-file gpt model, without torch (`aigc import-hf`),
and the cache that lets such a folder be loaded like a model file.

The file is the gpt graph (gpt_graph.py) with the folder's weights, config, tokenizer and
chat template (if it has one), checked by onnx.checker and by the loader itself before it
is published. Folders given as a model are converted once into the cache, AIGC_CACHE_DIR
(default $XDG_CACHE_HOME/aigc-engine, else ~/.cache/aigc-engine), under
hf/NAME-KEY.onnx. The key hashes the bytes of config.json, the tokenizer files (the chat
template's included) and a sharded checkpoint's index, and the name, size and
modification time of each weight file: hashing hundreds of MB of weights at every load
would cost seconds, and any rewrite of a file (save_pretrained, cp, a download) changes
its size or time. The converter's revision is in the key too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tempfile
from importlib import metadata as package_metadata
from pathlib import Path

import onnx

from ..errors import ModelFileError
from .artifact import read_artifact
from .gpt_graph import gpt_model
from .hf_gpt2 import (EOS, config_file, gpt2_weights, load_hf_tokenizer, read_gpt2_config, read_weights,
                      tokenizer_files, weight_files)
from .schema import (FORMAT_VERSION, META_CHAT_TEMPLATE, META_CONFIG, META_DESCRIPTION, META_FAMILY,
                     META_FORMAT_VERSION, META_PROVENANCE, META_TOKENIZER)

CONVERTER_REVISION = 2  # bump when the graph or metadata written here changes: cached files are then rebuilt
MAX_FILE_BYTES = (2 << 30) - (16 << 20)  # protobuf's 2 GiB limit on one message, less room for the graph


def import_hf(directory: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert the GPT-2 checkpoint in `directory` to our ONNX file at `out`; returns the path."""
    from ..text.chat_template import hf_chat_template  # text/ loads models through artifacts/: not at the top

    directory, out = Path(directory), Path(out)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: no such directory")
    config = read_gpt2_config(directory)
    tokenizer = load_hf_tokenizer(directory)
    if tokenizer.get_vocab_size() > config["vocab_size"]:
        raise ModelFileError(f"{directory}: the tokenizer has {tokenizer.get_vocab_size()} tokens, more than the "
                             f"model's vocab_size {config['vocab_size']}")
    if config["eos_token_id"] is None:
        config["eos_token_id"] = tokenizer.token_to_id(EOS)
    if config["eos_token_id"] is None:
        raise ModelFileError(f"{config_file(directory)}: no eos_token_id, and the tokenizer has no {EOS} token")
    weights = gpt2_weights(read_weights(directory), config, directory)
    size = sum(w.nbytes for w in weights.values())
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{directory}: {size / 2**30:.2f} GiB of float32 weights; one model file holds at most "
                             f"{MAX_FILE_BYTES / 2**30:.2f} GiB (protobuf's limit): GPT-2 up to medium fits")
    name = directory.resolve().name
    provenance = {"quality": None, "dataset": f"Hugging Face checkpoint {name}", "steps": None,
                  "imported_from": str(directory.resolve()), "converter": f"aigc-engine {_version()}",
                  "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    description = (f"GPT-2, {config['n_layer']} layers × {config['n_head']} heads, {config['n_embd']}-d, context "
                   f"{config['n_positions']}, vocab {config['vocab_size']}, imported from Hugging Face checkpoint "
                   f"{name}")
    meta = {META_FAMILY: "gpt", META_FORMAT_VERSION: str(FORMAT_VERSION), META_CONFIG: json.dumps(config),
            META_PROVENANCE: json.dumps(provenance), META_DESCRIPTION: description,
            META_TOKENIZER: tokenizer.to_str()}
    chat_template = hf_chat_template(directory)  # chat_template.jinja, or tokenizer_config.json's
    if chat_template is not None:
        meta[META_CHAT_TEMPLATE] = json.dumps(chat_template, ensure_ascii=False)
    blob = gpt_model(config, weights, meta).SerializeToString()
    del weights
    try:
        onnx.checker.check_model(blob, full_check=True)
    except onnx.checker.ValidationError as error:  # a bug here, not in the folder: say so
        raise ModelFileError(f"{directory}: the converted graph fails onnx.checker ({error})") from None
    tmp = _write_temp(blob, out)
    del blob  # before the loader reads the file back: one copy of the weights at a time
    return _publish(tmp, out)


def _write_temp(blob: bytes, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _publish(tmp: Path, out: Path) -> Path:
    """Check the file at `tmp` with the loader itself, then move it onto `out` in one step."""
    try:
        read_artifact(tmp)
        mask = os.umask(0)  # reading the umask means setting it; put it straight back
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's file is private (0600): give it a plain open()'s mode
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink()
        raise
    return out


def cache_dir() -> Path:
    """Where converted folders are kept: AIGC_CACHE_DIR, else $XDG_CACHE_HOME/aigc-engine, else ~/.cache/aigc-engine."""
    if os.environ.get("AIGC_CACHE_DIR"):
        return Path(os.environ["AIGC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aigc-engine"


def folder_key(directory: Path) -> str:
    """The cache key of a GPT-2 folder (see the head of this file); a folder without the files a
    GPT-2 folder holds raises ModelFileError saying what it must hold."""
    digest = hashlib.sha256(f"aigc hf import {FORMAT_VERSION}.{CONVERTER_REVISION}\n".encode())
    config, weights = config_file(directory), weight_files(directory)
    templates = [directory / name for name in ("tokenizer_config.json", "chat_template.jinja")]
    hashed = [config, *tokenizer_files(directory), *(w for w in weights if w.suffix == ".json"),
              *(path for path in templates if path.is_file())]
    for path in hashed:
        digest.update(f"{path.name}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for path in weights:
        if path.suffix != ".json":
            stat = path.stat()
            digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_import(directory: str | os.PathLike) -> Path:
    """The model file of a GPT-2 folder: from the cache when the folder is unchanged, else converted into it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: no such directory")
    key = folder_key(directory)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", directory.resolve().name)[:64] or "model"
    path = cache_dir() / "hf" / f"{stem}-{key[:24]}.onnx"
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{path.parent}: cannot create the cache folder for converted models ({error.strerror}); "
                      "set AIGC_CACHE_DIR to a writable folder") from None
    return import_hf(directory, path)


def _version() -> str:
    try:
        return package_metadata.version("aigc-engine")
    except package_metadata.PackageNotFoundError:
        return "(not installed)"

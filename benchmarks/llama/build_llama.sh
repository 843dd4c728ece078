#!/usr/bin/env bash
# Build llama.cpp (the source inside llama-cpp-python's sdist) and convert a
# GPT-2-small folder to GGUF f32 / bf16 / Q8_0. ~8 min to build on 2 cores, needs quiet cores to
# time (ggml's threads spin at barriers: a busy core slows it 10-30x).
#   LLAMA_DIR=DIR HF_DIR=path/to/gpt2-folder bash benchmarks/llama/build_llama.sh
# writes DIR/build/bin/llama-batched-bench and DIR/gguf/gpt2-small-random-{f32,bf16,q8_0}.gguf;
# benchmarks/text.py finds them through AIGC_LLAMA_DIR=DIR (benchmarks/llama_cpp_peer.py).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
: "${LLAMA_DIR:?set LLAMA_DIR}"; : "${HF_DIR:?set HF_DIR to the HF GPT-2 folder}"
mkdir -p "$LLAMA_DIR" && cd "$LLAMA_DIR"
# --no-build-isolation: otherwise pip builds cmake from source just to read the sdist's metadata
# (minutes); it then needs scikit-build-core installed, as this repo's own build does
[ -f llama_cpp_python-0.3.36.tar.gz ] ||
  pip download -q --no-binary :all: --no-deps --no-build-isolation llama-cpp-python==0.3.36 -d .
tar xzf llama_cpp_python-0.3.36.tar.gz
SRC=$PWD/llama_cpp_python-0.3.36/vendor/llama.cpp
cmake -S "$SRC" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DGGML_CUDA=OFF >cmake_configure.log
cmake --build build -j2 --target llama-bench llama-batched-bench llama-quantize >build.log
python3 -m venv venv && venv/bin/pip install -q "torch==2.13.0" "transformers==4.57.6" gguf numpy sentencepiece protobuf
# the converter wants n_ctx and the classic vocab.json / merges.txt: a copy of the folder gets them
cp -r "$HF_DIR" hf && venv/bin/python - <<'PY'
import json
c = json.load(open("hf/config.json")); c["n_ctx"] = c.get("n_positions", 1024); json.dump(c, open("hf/config.json", "w"))
t = json.load(open("hf/tokenizer.json"))
json.dump(t["model"]["vocab"], open("hf/vocab.json", "w"))
open("hf/merges.txt", "w").write("#version: 0.2\n" + "\n".join(m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]) + "\n")
json.dump({"model_max_length": c["n_ctx"], "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, open("hf/tokenizer_config.json", "w"))
PY
mkdir -p gguf
for t in f32 bf16; do
  LLAMA_CPP_SRC="$SRC" venv/bin/python "$HERE/llama_convert_gpt2.py" hf --outtype $t --outfile gguf/gpt2-small-random-$t.gguf
done
build/bin/llama-quantize gguf/gpt2-small-random-f32.gguf gguf/gpt2-small-random-q8_0.gguf Q8_0 2

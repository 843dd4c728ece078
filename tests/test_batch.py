"""`aigc batch`: OpenAI batch files through the server's own routes, in-process. Every
custom_id is answered exactly once, with the text TextGenerator gives for the same
params and seed; bad lines get error lines; an interrupted job resumes where it stopped."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("starlette")

from text_fixtures import export_tiny  # noqa: E402

from aigc_engine import AigcError, SamplingParams, TextGenerator  # noqa: E402
from aigc_engine.serving.app import Server  # noqa: E402
from aigc_engine.serving.batch import batch  # noqa: E402
from aigc_engine.serving.engine import Engine  # noqa: E402

GOOD = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/completions",
         "body": {"model": "gpt", "prompt": f"def f{i}(", "max_tokens": 6 + i, "seed": i, "temperature": 0.9}}
        for i in range(8)]
BAD = {  # line -> what its error must say
    "{not json": "not JSON",
    json.dumps({"custom_id": "get", "method": "GET", "url": "/v1/completions", "body": {}}): "method",
    json.dumps({"custom_id": "stream", "method": "POST", "url": "/v1/completions",
                "body": {"prompt": "x", "stream": True}}): "cannot stream",
    json.dumps({"method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}): "custom_id",
    json.dumps({"custom_id": "where", "method": "POST", "url": "/v1/embeddings", "body": {}}): "url",
}


@pytest.fixture(scope="module")
def gpt_path(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny-batch"), "gpt")[1]


@pytest.fixture()
def server(gpt_path):
    engine = Engine(TextGenerator.load(str(gpt_path)))
    yield Server({"gpt": engine}, {})
    engine.close(cancel=True)


def expected_text(gpt_path, body: dict) -> str:
    params = SamplingParams(max_new_tokens=body["max_tokens"], seed=body["seed"], temperature=body["temperature"])
    return TextGenerator.load(str(gpt_path)).generate(body["prompt"], params)[0].text


def read_output(path) -> dict:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {}
    for line in lines:
        assert line["id"].startswith("batch_req_")
        key = line["custom_id"] if line["custom_id"] is not None else f"no-id-{len(by_id)}"
        assert key not in by_id, f"custom_id {key} written twice"
        by_id[key] = line
    return by_id


def write_input(path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def test_every_line_is_answered_once_with_the_generators_text(tmp_path, gpt_path, server):
    bad_lines = list(BAD)
    refused = json.dumps({"custom_id": "refused", "method": "POST", "url": "/v1/completions",
                          "body": {"model": "gpt", "prompt": "x", "top_p": 5}})
    lines = [json.dumps(GOOD[0])] + bad_lines[:3] + [json.dumps(g) for g in GOOD[1:]] + [refused] + bad_lines[3:]
    write_input(tmp_path / "in.jsonl", lines)
    assert batch(server, tmp_path / "in.jsonl", tmp_path / "out.jsonl", quiet=True) == (len(lines), 0)
    out = read_output(tmp_path / "out.jsonl")
    assert len(out) == len(lines)
    for request in GOOD:
        response = out[request["custom_id"]]["response"]
        assert response["status_code"] == 200 and out[request["custom_id"]]["error"] is None
        body = response["body"]
        assert body["object"] == "text_completion"
        assert body["choices"][0]["text"] == expected_text(gpt_path, request["body"])
    assert out["refused"]["response"]["status_code"] == 400
    assert out["refused"]["response"]["body"]["error"]["param"] == "top_p"
    errors = [line["error"]["message"] for line in out.values() if line["response"] is None]
    assert len(errors) == len(BAD)
    for message in BAD.values():
        assert any(message in error for error in errors), message


def test_a_body_without_model_goes_to_the_only_model(tmp_path, gpt_path, server):
    request = dict(GOOD[3], body={k: v for k, v in GOOD[3]["body"].items() if k != "model"})
    write_input(tmp_path / "in.jsonl", [json.dumps(request)])
    batch(server, tmp_path / "in.jsonl", tmp_path / "out.jsonl", quiet=True)
    body = read_output(tmp_path / "out.jsonl")["req-3"]["response"]["body"]
    assert body["choices"][0]["text"] == expected_text(gpt_path, GOOD[3]["body"])


def test_a_rerun_skips_what_was_written_and_drops_a_cut_line(tmp_path, server):
    write_input(tmp_path / "in.jsonl", [json.dumps(g) for g in GOOD])
    batch(server, tmp_path / "in.jsonl", tmp_path / "full.jsonl", quiet=True)
    full = (tmp_path / "full.jsonl").read_text().splitlines()
    # As if interrupted: three lines written, the fourth cut off mid-write.
    (tmp_path / "out.jsonl").write_text("\n".join(full[:3]) + "\n" + full[3][:25])
    assert batch(server, tmp_path / "in.jsonl", tmp_path / "out.jsonl", quiet=True) == (5, 3)
    out = read_output(tmp_path / "out.jsonl")
    assert sorted(out) == sorted(g["custom_id"] for g in GOOD)
    complete = {json.loads(line)["custom_id"]: json.loads(line) for line in full}
    for custom_id, line in out.items():
        assert line["response"]["body"]["choices"] == complete[custom_id]["response"]["body"]["choices"]
    assert batch(server, tmp_path / "in.jsonl", tmp_path / "out.jsonl", quiet=True) == (0, 8)


def test_repeated_custom_ids_and_bad_settings_are_refused_before_anything_runs(tmp_path, server):
    write_input(tmp_path / "in.jsonl", [json.dumps(GOOD[0]), json.dumps(GOOD[1]), json.dumps(GOOD[0])])
    with pytest.raises(AigcError, match="line 3: custom_id 'req-0' repeats line 1"):
        batch(server, tmp_path / "in.jsonl", tmp_path / "out.jsonl", quiet=True)
    with pytest.raises(AigcError, match="--concurrency"):
        batch(server, tmp_path / "in.jsonl", tmp_path / "out.jsonl", concurrency=0)
    with pytest.raises(AigcError, match="cannot read"):
        batch(server, tmp_path / "missing.jsonl", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_the_command_line(tmp_path, gpt_path):
    unnamed = [dict(g, body={k: v for k, v in g["body"].items() if k != "model"}) for g in GOOD[:3]]
    write_input(tmp_path / "in.jsonl", [json.dumps(g) for g in unnamed] + ["{not json"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-m", "aigc_engine.cli", "batch", str(tmp_path / "in.jsonl"),
                          str(tmp_path / "out.jsonl"), "--model", str(gpt_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "4/4 lines" in run.stderr and "tokens/s" in run.stderr
    out = read_output(tmp_path / "out.jsonl")
    for g in GOOD[:3]:
        assert out[g["custom_id"]]["response"]["body"]["choices"][0]["text"] == expected_text(gpt_path, g["body"])
    assert "wrote 4 lines" in run.stderr

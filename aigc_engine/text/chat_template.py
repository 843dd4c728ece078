"""Chat messages → one prompt string, through a Jinja chat template rendered as transformers'
`apply_chat_template(..., add_generation_prompt=True, tokenize=False)` renders it.

The template is the model file's own (`aigc.chat_template` metadata: what a Hugging Face
folder's tokenizer_config.json or chat_template.jinja held when it was imported), a file
given by the caller, or DEFAULT_CHAT_TEMPLATE: a plain transcript for the shipped base
models, which were never tuned to chat. Templates run in Jinja's immutable sandbox with
transformers' environment (trim_blocks, lstrip_blocks, loop controls, raise_exception,
strftime_now, a tojson that keeps non-ASCII), since templates from the Hub are untrusted code.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import AigcError, ModelFileError
from .sampling import MAX_STOP_STRINGS, SamplingParams

# "role: content" lines, then "assistant:" for the reply. No trailing space: byte-level BPE
# words carry their leading space, so the model writes " Hello" itself.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] | trim }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
# A base model goes on to write the next turn of the transcript: the reply ends where it would.
DEFAULT_STOP = ("\nuser:",)
ROLES = ("system", "developer", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name")
# transformers passes the tokenizer's special tokens to the template under these names.
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class MessageError(AigcError):
    """A message the chat cannot take; `param` is its path, e.g. messages[2].role."""

    def __init__(self, param: str, problem: str):
        super().__init__(f"{param}: {problem}")
        self.param = param


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: marks assistant text for training masks in
    transformers; here it renders its body, so templates that use it load."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller) -> str:
        return caller()


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[_Generation, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    return environment


def check_messages(messages) -> list[dict]:
    """OpenAI-style chat messages, checked: a non-empty list of {"role", "content"[, "name"]}
    with a known role and text content (a string, or a list of {"type": "text", "text"} parts,
    joined). Returns them as plain dicts with string content."""
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else "nothing" if messages is None else type(messages).__name__
        raise MessageError("messages", f"expected a non-empty list of messages, got {got}")
    checked = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise MessageError(where, f"expected an object with a role and content, got {type(message).__name__}")
        if "tool_calls" in message or "function_call" in message or message.get("role") in ("tool", "function"):
            raise MessageError(where, "tool and function messages are not supported: these models have no "
                                      "function calling")
        unknown = sorted(set(message) - set(MESSAGE_KEYS))
        if unknown:
            raise MessageError(f"{where}.{unknown[0]}",
                               f"unrecognized message field (known: {', '.join(MESSAGE_KEYS)})")
        role = message.get("role")
        if role is None:
            raise MessageError(f"{where}.role", "missing")
        if role not in ROLES:
            raise MessageError(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise MessageError(f"{where}.name", f"expected a string, got {type(name).__name__}")
        checked.append({"role": role, "content": _content(message.get("content"), f"{where}.content")}
                       | ({"name": name} if name is not None else {}))
    return checked


def _content(content, where: str) -> str:
    if content is None:
        raise MessageError(where, "missing")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise MessageError(f"{where}[{j}]", f"only text parts ({{\"type\": \"text\", \"text\": ...}}) are "
                                                    f"supported, got {kind!r}")
            texts.append(part["text"])
        return "".join(texts)
    raise MessageError(where, f"expected a string or a list of text parts, got {type(content).__name__}")


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template. `stop`: strings that end a reply besides the end-of-text
    token (the default template's only); `special_tokens`: bos_token, eos_token, ... as the
    template sees them; `origin`: where it came from, for messages."""
    source: str
    special_tokens: dict = dataclasses.field(default_factory=dict)
    stop: tuple[str, ...] = ()
    origin: str = "the default chat template"

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise AigcError(f"{self.origin}: empty")
        try:
            compiled = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as error:
            raise AigcError(f"{self.origin}: not a valid Jinja template (line {error.lineno}: {error.message})") \
                from None
        object.__setattr__(self, "_compiled", compiled)

    @classmethod
    def default(cls, special_tokens: dict | None = None) -> ChatTemplate:
        return cls(DEFAULT_CHAT_TEMPLATE, special_tokens or {}, DEFAULT_STOP)

    @classmethod
    def from_file(cls, path: str | Path, special_tokens: dict | None = None) -> ChatTemplate:
        """A Jinja file (as transformers' chat_template.jinja), or a JSON file holding a
        `chat_template` string (a tokenizer_config.json)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AigcError(f"chat template {path}: cannot read it ({getattr(error, 'strerror', None) or error})") \
                from None
        if path.suffix == ".json":
            text = _template_of(_json_object(text, path), path)
            if text is None:
                raise AigcError(f"chat template {path}: no 'chat_template' in this JSON file")
        return cls(text, special_tokens or {}, (), f"chat template {path}")

    def render(self, messages) -> str:
        """The prompt for the assistant's next reply; MessageError (an AigcError) for messages
        the template cannot take, naming the problem."""
        messages = check_messages(messages)
        try:
            return self._compiled.render(messages=messages, tools=None, documents=None, add_generation_prompt=True,
                                         **self.special_tokens)
        except jinja2.TemplateError as error:  # raise_exception, an undefined name, a sandbox refusal
            raise MessageError("messages", f"{self.origin} refused them: {error}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as error:
            raise MessageError("messages", f"{self.origin} failed on them: {type(error).__name__}: {error}") from None

    def with_stops(self, params: SamplingParams) -> SamplingParams:
        """params with this template's stop strings added."""
        extra = tuple(s for s in self.stop if s not in params.stop)
        if not extra:
            return params
        if len(params.stop) + len(extra) > MAX_STOP_STRINGS:
            raise AigcError(f"stop: at most {MAX_STOP_STRINGS - len(extra)} stop strings with {self.origin}, "
                            f"which adds {', '.join(map(repr, extra))}; got {len(params.stop)}")
        return dataclasses.replace(params, stop=params.stop + extra)


def _json_object(text: str, source) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise AigcError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise AigcError(f"{source}: expected a JSON object, got {type(value).__name__}")
    return value


def _template_of(config: dict, source) -> str | None:
    """tokenizer_config.json's chat_template: a string, or a list of {"name", "template"}
    from which transformers uses the one named "default"."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
        if template is None:
            raise AigcError(f"{source}: chat_template lists no template named 'default' "
                            f"(has {', '.join(map(str, named))})")
    if template is not None and not isinstance(template, str):
        raise AigcError(f"{source}: chat_template must be a string, got {type(template).__name__}")
    return template


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken object."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def hf_chat_template(directory: str | Path) -> dict | None:
    """The chat template of a Hugging Face folder, as the `aigc.chat_template` metadata holds
    it — {"template": str, "special_tokens": {"bos_token": ..., ...}} — or None when the
    folder has none. chat_template.jinja wins over tokenizer_config.json's chat_template,
    as in transformers."""
    directory = Path(directory)
    config_path = directory / "tokenizer_config.json"
    config = _json_object(config_path.read_text(encoding="utf-8"), config_path) if config_path.is_file() else {}
    jinja_path = directory / "chat_template.jinja"
    template = jinja_path.read_text(encoding="utf-8") if jinja_path.is_file() else _template_of(config, config_path)
    if template is None:
        return None
    special = {name: _token_text(config.get(name)) for name in SPECIAL_TOKENS}
    return {"template": template, "special_tokens": {k: v for k, v in special.items() if v is not None}}


def model_chat_template(metadata: dict | None, eos_token: str | None, source: str,
                        path: str | Path | None = None) -> ChatTemplate:
    """The chat template for a model: the file at `path` if given, else the one the model file
    carries (`aigc.chat_template` metadata), else the default. Templates see the special
    tokens stored with the model's own template, else eos_token as both bos_token and
    eos_token (GPT-2's single <|endoftext|>)."""
    if metadata:
        template, special = metadata.get("template"), metadata.get("special_tokens", {})
        if not isinstance(template, str) or not isinstance(special, dict) \
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in special.items()):
            raise ModelFileError(f"{source}: 'aigc.chat_template' metadata must be {{\"template\": str, "
                                 "\"special_tokens\": {name: str}}")
    else:
        special = {"bos_token": eos_token, "eos_token": eos_token} if eos_token else {}
    if path is not None:
        return ChatTemplate.from_file(path, special)
    if not metadata:
        return ChatTemplate.default(special)
    try:
        return ChatTemplate(template, special, (), f"{source}'s chat template")
    except AigcError as error:
        raise ModelFileError(str(error)) from None

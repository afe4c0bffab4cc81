"""How a routed conversation is rewritten for the provider it goes to.

A conversation one model began can go on at another, and providers refuse what others make or take:
thinking on a model without it, each other's tool call ids, content arrays, roles, orders of messages.
A provider's dialect (`body:` in the catalog) names the rules it needs; `render_body` applies them.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from llm_router.catalog import BodyDialect

THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def wants_thinking(body: dict[str, Any]) -> bool:
    """Whether an Anthropic body asks for extended thinking (a `thinking` field other than type disabled)."""
    thinking = body.get("thinking")
    return thinking is not None and not (isinstance(thinking, dict) and thinking.get("type") == "disabled")


def takes_field(dialect: BodyDialect | None, api: str, name: str) -> bool:
    """Whether a provider dialect sends a top-level field on (neither dropped nor left out of what it accepts)."""
    if dialect is None:
        return True
    accepted = dialect.accept.get(api)
    return name not in dialect.drop and (accepted is None or name in accepted)


def thinking_unfit(body: dict[str, Any]) -> bool:
    """Whether a thinking turn continues a tool call that was made without thinking.

    Anthropic answers 400 when thinking is on and the assistant turn whose tool calls the last user
    message answers does not start with a thinking block: the case whenever the tool call came from
    a model that does not think (another model of the routed chain), or from a call sent without thinking.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return False
    last, before = messages[-1], messages[-2]
    if not (isinstance(last, dict) and last.get("role") == "user" and isinstance(before, dict)
            and before.get("role") == "assistant"):
        return False
    content = last.get("content")
    if not (isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)):
        return False
    answer = before.get("content")
    first = answer[0] if isinstance(answer, list) and answer else None
    return not (isinstance(first, dict) and first.get("type") in THINKING_BLOCKS)


def unthought_tool_turn(body: dict[str, Any]) -> bool:
    """Whether any assistant turn with a tool call holds no thinking block (a model that did not think made it)."""
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
        if isinstance(content, list):
            kinds = {b.get("type") for b in content if isinstance(b, dict)}
            if "tool_use" in kinds and not kinds & THINKING_BLOCKS:
                return True
    return False


def block_signature(block: Any) -> str | None:
    """What identifies a thinking block's maker: a `thinking` block's signature, a `redacted_thinking` block's data."""
    if not isinstance(block, dict):
        return None
    kind = block.get("type")
    value = block.get("signature") if kind == "thinking" else block.get("data") if kind == "redacted_thinking" else None
    return value if isinstance(value, str) and value else None


def _without_blocks(messages: Any, unwanted: Callable[[Any], bool]) -> Any:
    """Assistant messages without the thinking blocks `unwanted` picks; a message they would empty stays as it was, and
    the same list comes back when no block goes."""
    if not isinstance(messages, list):
        return messages
    out: list[Any] | None = None  # a copy, made at the first message that changes
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
        if not isinstance(content, list):
            continue
        # Only thinking blocks are tested, and a message is rebuilt only when one goes: a long agent history holds
        # mostly text, tool calls and results, and this walk runs on every request that may carry thinking.
        for b in content:
            if _is_thinking_block(b) and unwanted(b):
                break
        else:
            continue
        kept = [b for b in content if not (_is_thinking_block(b) and unwanted(b))]
        if kept:
            if out is None:
                out = list(messages)
            out[i] = {**m, "content": kept}
    return messages if out is None else out


def without_foreign_thinking(messages: Any, model_id: str, origin: Callable[[str], str | None] | None,
                             unsigned: bool = False) -> Any:
    """Anthropic messages without the thinking blocks another model is known to have made (`origin`: signature -> the
    model that answered with it, None when unknown) and, when `unsigned`, without those that carry no signature; others
    as they are (a message they would empty stays as it was).

    Signatures are bound to the model that made them: Anthropic answers 400 ("messages.1.content.0: Invalid `signature`
    in `thinking` block") to a block of another model, which a conversation routed between models carries, and
    ("messages.1.content.0.thinking.signature: Field required") to the unsigned blocks DeepSeek's Anthropic endpoint makes.
    """
    def foreign(block: Any) -> bool:
        sig = block_signature(block)
        if sig is None:
            return unsigned  # _without_blocks asks only about thinking blocks
        made_by = origin(sig) if origin is not None else None
        return made_by is not None and made_by != model_id

    return _without_blocks(messages, foreign)


def _is_thinking_block(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") in THINKING_BLOCKS


def without_thinking_blocks(messages: Any) -> Any:
    """Assistant messages without thinking blocks, for a model that does not think (a message they would empty
    stays as it was)."""
    return _without_blocks(messages, _is_thinking_block)


def text_contents(messages: Any) -> Any:
    """Chat messages whose content is an array of text parts only, with that content as one string (the parts'
    texts, one per line); other messages as they are. For providers that take only string content."""
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                             for p in content):
            m = {**m, "content": "\n".join(p["text"] for p in content)}
        out.append(m)
    return out


def developer_as_system(messages: Any) -> Any:
    """Chat messages with OpenAI's `developer` role as `system` (the same instructions, in the role every provider takes)."""
    if not isinstance(messages, list):
        return messages
    return [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m for m in messages]


BRIDGE = {"role": "assistant", "content": "Tool results received."}


def bridged_tool_results(messages: Any) -> Any:
    """Chat messages with an assistant message between tool results and a user message that follows them at once
    (an interrupted tool loop), for providers that refuse that order; others as they are."""
    if not isinstance(messages, list) or len(messages) < 2:
        return messages
    out: list[Any] = []
    for m in messages:
        if out and isinstance(m, dict) and m.get("role") == "user" and isinstance(out[-1], dict) and out[-1].get("role") == "tool":
            out.append(dict(BRIDGE))
        out.append(m)
    return out


def kept_fields(messages: Any, fields: dict[str, frozenset[str]]) -> Any:
    """Chat messages with only the fields their role takes at the provider (`fields`: role -> fields, "tool_call" ->
    the fields of each tool call); a message of a role not named, and anything that is not a message, as it is.

    Clients send back what an answer held (DeepSeek's `reasoning_content`, `refusal`, `annotations`), and OpenAI takes
    a user's `name`: Mistral answers 422 to each ("Extra inputs are not permitted").
    """
    if not isinstance(messages, list) or not fields:
        return messages
    call_fields = fields.get("tool_call")
    out = []
    for m in messages:
        if isinstance(m, dict):
            role = m.get("role")
            allowed = fields.get(role) if isinstance(role, str) and role != "tool_call" else None
            if allowed is not None and any(k not in allowed for k in m):
                m = {k: v for k, v in m.items() if k in allowed}
            calls = m.get("tool_calls")
            if call_fields is not None and isinstance(calls, list) and any(
                    isinstance(c, dict) and any(k not in call_fields for k in c) for c in calls):
                m = {**m, "tool_calls": [{k: v for k, v in c.items() if k in call_fields} if isinstance(c, dict) else c
                                         for c in calls]}
        out.append(m)
    return out


def without_empty_tool_calls(messages: Any) -> Any:
    """Chat messages without empty `tool_calls` arrays (a message that calls no tool, as OpenAI wants it written)."""
    if not isinstance(messages, list) or not any(isinstance(m, dict) and m.get("tool_calls") == [] for m in messages):
        return messages
    return [{k: v for k, v in m.items() if k != "tool_calls"} if isinstance(m, dict) and m.get("tool_calls") == [] else m
            for m in messages]


# Google's documented stand-in for a tool call no Gemini model made (it skips the signature check).
UNSIGNED_TOOL_CALL = "skip_thought_signature_validator"


def _gemini_signature(call: Any) -> Any:
    extra = call.get("extra_content") if isinstance(call, dict) else None
    google = extra.get("google") if isinstance(extra, dict) else None
    return google.get("thought_signature") if isinstance(google, dict) else None


def signed_tool_calls(messages: Any) -> Any:
    """Chat messages whose assistant tool calls carry a Gemini thought signature on the first call of each message
    (Gemini 3 checks that one): a call without one gets Google's stand-in, under `extra_content.google`.

    Gemini 3 answers 400 ("Function call is missing a thought_signature in functionCall parts") to tool calls that
    another model made, which a routed conversation carries; its own calls come back with their signatures.
    """
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        calls = m.get("tool_calls") if isinstance(m, dict) and m.get("role") == "assistant" else None
        if isinstance(calls, list) and calls and isinstance(calls[0], dict) and not _gemini_signature(calls[0]):
            first = calls[0]
            extra = first.get("extra_content")
            extra = dict(extra) if isinstance(extra, dict) else {}
            google = extra.get("google")
            extra["google"] = {**(google if isinstance(google, dict) else {}), "thought_signature": UNSIGNED_TOOL_CALL}
            m = {**m, "tool_calls": [{**first, "extra_content": extra}, *calls[1:]]}
        out.append(m)
    return out


def answer_key(call_id: Any, text_digest: str | None) -> str | None:
    """How an assistant answer is known when a client sends it back: its first tool call id, else its text's digest."""
    if isinstance(call_id, str) and call_id:
        return "call:" + call_id
    return "text:" + text_digest if text_digest else None


def text_hash() -> Any:
    """The hash whose hex digest keys an answer's text (answer_key); a stream feeds it piece by piece."""
    return hashlib.blake2b(digest_size=12)


def text_digest(text: str) -> str:
    """The digest of an answer's text that answer_key takes."""
    h = text_hash()
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def message_key(message: dict[str, Any]) -> str | None:
    """answer_key of an assistant message as a client sends it back."""
    calls = message.get("tool_calls")
    first = calls[0] if isinstance(calls, list) and calls and isinstance(calls[0], dict) else None
    content = message.get("content")
    return answer_key(first.get("id") if first is not None else None,
                      text_digest(content) if isinstance(content, str) and content else None)


def _has_reasoning(message: dict[str, Any]) -> bool:
    value = message.get("reasoning_content")
    return isinstance(value, str) and value != ""


def reasoning_stand_in(index: int, message: dict[str, Any]) -> str:
    """What stands for an assistant message's missing reasoning: which message it is and which tools it called.

    Unique per message (its index and tool call ids) and the same on every request, so a provider's prompt cache
    still matches the conversation's prefix; agent projects report that one repeated stand-in makes long contexts worse.
    """
    calls = message.get("tool_calls")
    named = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            cid = call.get("id")
            named.append(f"{name} ({cid})" if isinstance(cid, str) and cid else name)
    said = f"; it called {', '.join(named)}" if named else ""
    return f"(The reasoning of message {index} is not available: another model wrote it, or it was not kept{said}.)"


def reasoned_assistant_messages(messages: Any, recall: Callable[[str], str | None] | None = None) -> Any:
    """Chat messages where every assistant message but a last one (a prefill) carries a non-empty `reasoning_content`:
    its own, the one its answer held (`recall`: answer key -> the reasoning kept from answers), or a stand-in.

    DeepSeek's thinking models want each assistant message's reasoning passed back and answer 400 without it
    (deepseek-reasoner: "Missing `reasoning_content` field in the assistant message at message index 2"; V4:
    "The `reasoning_content` in the thinking mode must be passed back to the API."), also to an empty string.
    A routed conversation holds assistant messages other models wrote, with no reasoning to pass back.
    """
    if not isinstance(messages, list):
        return messages
    last = len(messages) - 1

    def bare(i: int, m: Any) -> bool:
        return isinstance(m, dict) and m.get("role") == "assistant" and not _has_reasoning(m) and (i < last or bool(m.get("tool_calls")))

    def reasoning(i: int, m: dict[str, Any]) -> str:
        key = message_key(m) if recall is not None else None
        return (recall(key) if recall is not None and key is not None else None) or reasoning_stand_in(i, m)

    if not any(bare(i, m) for i, m in enumerate(messages)):
        return messages
    return [{**m, "reasoning_content": reasoning(i, m)} if bare(i, m) else m for i, m in enumerate(messages)]


def without_reasoning_items(items: Any) -> Any:
    """Responses input items without `reasoning` items, for a model that does not reason.

    OpenAI answers 400 ("Reasoning input items can only be provided to a reasoning or computer use model.") when a
    conversation a reasoning model answered goes on at one that does not, as routing between them makes it.
    """
    if not isinstance(items, list) or not any(isinstance(i, dict) and i.get("type") == "reasoning" for i in items):
        return items
    return [i for i in items if not (isinstance(i, dict) and i.get("type") == "reasoning")]


ENCRYPTED_REASONING = "reasoning.encrypted_content"


def without_encrypted_reasoning(include: Any) -> Any:
    """A Responses `include` list without `reasoning.encrypted_content` (None when nothing else is left), for a model that
    does not reason.

    OpenAI answers 400 ("Encrypted content is not supported with this model.", param `include`) to it on GPT-4o and GPT-4.1;
    clients written for its reasoning models (Codex-style agents) send it on every request.
    """
    if not isinstance(include, list) or ENCRYPTED_REASONING not in include:
        return include
    kept = [i for i in include if i != ENCRYPTED_REASONING]
    return kept or None


def without_verbosity(text: Any) -> Any:
    """A Responses `text` object without `verbosity` (None when nothing else is left), for a model before GPT-5.

    OpenAI answers 400 ("Unsupported value: 'verbosity' does not support 'low' with this model. Supported values are:
    'medium'.") to any but its default on GPT-4o; clients written for GPT-5 set it.
    """
    if not isinstance(text, dict) or "verbosity" not in text:
        return text
    kept = {k: v for k, v in text.items() if k != "verbosity"}
    return kept or None


def prefixed_last_assistant(messages: Any) -> Any:
    """Chat messages whose last one, an assistant message without tool calls (a prefill), is marked `prefix: true`."""
    if not isinstance(messages, list) or not messages:
        return messages
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant" and not last.get("tool_calls") and last.get("prefix") is not True:
        return [*messages[:-1], {**last, "prefix": True}]
    return messages


_ALNUM9 = re.compile(r"[A-Za-z0-9]{9}")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MAX_TOOL_ID_CHARS = 40  # OpenAI's chat API: "string too long. Expected a string with maximum length 40"


def _base62(value: str, size: int) -> str:
    """`size` letters or digits derived from a text's hash (the same text, the same result)."""
    n = int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest(), "big")
    out = []
    for _ in range(size):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(out)


def alnum9(value: str) -> str:
    """A tool call id as 9 letters or digits (Mistral's rule): itself if it is one, else derived from its hash."""
    return value if _ALNUM9.fullmatch(value) else _base62(value, 9)


def max40(value: str) -> str:
    """A tool call id of at most 40 characters (OpenAI's rule): itself if it fits, else `call_` and 24 derived from it."""
    return value if len(value) <= MAX_TOOL_ID_CHARS else "call_" + _base62(value, 24)


_WORD = re.compile(r"[A-Za-z0-9_-]+")


def word_id(value: str) -> str:
    """A tool call id of letters, digits, `_` and `-` only (Anthropic's rule): itself if it is one, else `toolu_` and 24
    derived from it (other providers' ids hold dots and colons: `functions.Bash:0`)."""
    return value if _WORD.fullmatch(value) else "toolu_" + _base62(value, 24)


TOOL_ID_RULES: dict[str, Callable[[str], str]] = {"alnum9": alnum9, "max40": max40, "word": word_id}


def tool_ids_as(messages: Any, fix: Callable[[str], str]) -> Any:
    """Chat messages with every tool call id, in assistant tool_calls and in tool results, as `fix` makes it.

    Providers restrict the ids other providers make: Mistral answers 400 ("Tool call id was call_... but
    must be a-z, A-Z, 0-9, with a length of 9."), OpenAI to ids over 40 characters (DeepSeek's are 43). A
    conversation whose earlier tool calls another model made cannot go on there unchanged. The same id
    always maps to the same replacement, so calls and results still pair up.
    """
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        if isinstance(m, dict):
            calls = m.get("tool_calls")
            if isinstance(calls, list) and any(isinstance(c, dict) and isinstance(c.get("id"), str) for c in calls):
                m = {**m, "tool_calls": [{**c, "id": fix(c["id"])} if isinstance(c, dict) and isinstance(c.get("id"), str)
                                         else c for c in calls]}
            answered = m.get("tool_call_id")
            if isinstance(answered, str):
                m = {**m, "tool_call_id": fix(answered)}
        out.append(m)
    return out


NOT_THINKING_MODEL = "model"  # the model does not take extended thinking
NOT_THINKING_LOOP = "loop"  # the tool call this turn answers was made without thinking
NOT_THINKING_HISTORY = "history"  # an earlier tool call was made without thinking, and the provider wants it on every one


def thinking_left_out(body: dict[str, Any], dialect: BodyDialect | None) -> str | None:
    """Why an Anthropic body asking for extended thinking goes out without it (NOT_THINKING_*), or None."""
    if not wants_thinking(body):
        return None
    if not takes_field(dialect, "messages", "thinking"):
        return NOT_THINKING_MODEL
    if thinking_unfit(body):
        return NOT_THINKING_LOOP
    if dialect is not None and dialect.thinking_every_tool_turn and unthought_tool_turn(body):
        return NOT_THINKING_HISTORY
    return None


def fit_thinking(body: dict[str, Any], dialect: BodyDialect | None, model_id: str = "",
                 origin: Callable[[str], str | None] | None = None, blocks: bool = True) -> None:
    """An Anthropic body made fit for the model (in place): no thinking blocks other models made (when `origin` knows
    them, or they carry no signature and the provider wants one); a model that does not think gets no thinking blocks
    (its dialect drops the field itself); a tool loop whose call began without thinking (or, where the provider wants
    every tool call to, any earlier one), no thinking. `blocks` False: the body holds no thinking blocks to look at.
    Where the provider wants every tool call to carry thinking (DeepSeek, whose V4 models think unless told not to),
    "no thinking" is said outright ({type: disabled}) when a tool call in the history was made without it."""
    unsigned = dialect is not None and dialect.signed_thinking_only
    if blocks and (origin is not None or unsigned) and "messages" in body:
        body["messages"] = without_foreign_thinking(body["messages"], model_id, origin, unsigned)
    why = thinking_left_out(body, dialect)
    if why == NOT_THINKING_MODEL:
        body["messages"] = without_thinking_blocks(body.get("messages"))
    elif why is not None:
        del body["thinking"]
    if dialect is not None and dialect.thinking_every_tool_turn and "thinking" not in body and unthought_tool_turn(body):
        body["thinking"] = {"type": "disabled"}


def block_ids_as(messages: Any, fix: Callable[[str], str]) -> Any:
    """Anthropic messages with every tool call id, in `tool_use` blocks and in the `tool_result` blocks answering them,
    as `fix` makes it (the same id, the same replacement)."""
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in content):
            blocks = []
            for b in content:
                if isinstance(b, dict):
                    key = "id" if b.get("type") == "tool_use" else "tool_use_id" if b.get("type") == "tool_result" else ""
                    if key and isinstance(b.get(key), str):
                        b = {**b, key: fix(b[key])}
                blocks.append(b)
            m = {**m, "content": blocks}
        out.append(m)
    return out


def _blank_text(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str) \
        and not block["text"].strip()


def without_blank_text(messages: Any) -> Any:
    """Anthropic messages without empty or whitespace-only text blocks; a message (but the last) that held nothing else,
    or whose string content is blank, is left out; the same list comes back when nothing goes.

    Anthropic answers 400 ("messages: text content blocks must be non-empty", "messages: text content blocks must contain
    non-whitespace text") to blank text blocks, which its own answers and other models' sometimes hold, and to a blank
    message but a final assistant one.
    """
    if not isinstance(messages, list):
        return messages
    out: list[Any] = []
    changed = False
    last = len(messages) - 1
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(_blank_text(b) for b in content):
            changed = True
            kept = [b for b in content if not _blank_text(b)]
            if not kept and i < last:
                continue
            if kept or m.get("role") == "assistant":  # a final assistant message may be empty (a last user one not)
                m = {**m, "content": kept}
        elif isinstance(content, str) and not content.strip() and i < last:
            changed = True
            continue
        out.append(m)
    return out if changed else messages


def without_blank_system(system: Any) -> Any:
    """An Anthropic `system` without blank text blocks (None when nothing else is left)."""
    if not isinstance(system, list) or not any(_blank_text(b) for b in system):
        return system
    kept = [b for b in system if not _blank_text(b)]
    return kept or None


def unforced_tool_choice(choice: Any, any_tool: bool = False) -> Any:
    """A tool_choice that names one tool (chat {"type": "function", ...}, Anthropic {"type": "tool", ...}, or a legacy
    function_call {"name": ...}) as auto, in the same API's form; with `any_tool`, one that forces some tool (chat
    "required", Anthropic {"type": "any"}) too; any other choice as it came."""
    if not isinstance(choice, dict):
        return "auto" if any_tool and choice == "required" else choice
    kind = choice.get("type")
    if kind == "tool" or (any_tool and kind == "any"):  # Anthropic's: auto keeps the choice's other settings
        return {**{k: v for k, v in choice.items() if k not in ("type", "name")}, "type": "auto"}
    if kind == "function" or (kind is None and "name" in choice):
        return "auto"
    return choice


MERGED_ROLES = ("user", "assistant")


def _as_parts(content: Any) -> list[Any]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if isinstance(content, str) and content else []


def _joined_content(first: Any, second: Any) -> Any:
    """Two messages' contents as one: strings joined by a blank line, else one array of parts."""
    if not isinstance(first, list) and not isinstance(second, list):
        texts = [c for c in (first, second) if isinstance(c, str) and c]
        return "\n\n".join(texts) if texts else first if first is not None else second
    return _as_parts(first) + _as_parts(second)


def _merged(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One message of two successive ones of the same role: contents joined, an assistant's tool calls and reasoning
    both kept; the first's other fields."""
    out = {**first, "content": _joined_content(first.get("content"), second.get("content"))}
    calls = [c for m in (first, second) if isinstance(m.get("tool_calls"), list) for c in m["tool_calls"]]
    if calls:
        out["tool_calls"] = calls
    thoughts = [m["reasoning_content"] for m in (first, second) if isinstance(m.get("reasoning_content"), str)
                and m["reasoning_content"]]
    if thoughts:
        out["reasoning_content"] = "\n\n".join(thoughts)
    return out


def merged_successive(messages: Any) -> Any:
    """Chat messages with each run of successive user messages, and of successive assistant messages, sent as one."""
    if not isinstance(messages, list):
        return messages
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if not any(a == b and a in MERGED_ROLES for a, b in zip(roles, roles[1:])):
        return messages
    out: list[Any] = []
    for m, role in zip(messages, roles):
        if role in MERGED_ROLES and out and isinstance(out[-1], dict) and out[-1].get("role") == role:
            out[-1] = _merged(out[-1], m)
        else:
            out.append(m)
    return out


def anthropic_messages_for(messages: Any, dialect: BodyDialect) -> Any:
    """Anthropic messages as a provider's dialect wants them: tool call ids, no blank text."""
    fix = TOOL_ID_RULES.get(dialect.tool_call_ids)
    if fix is not None:
        messages = block_ids_as(messages, fix)
    if dialect.drop_blank_text:
        messages = without_blank_text(messages)
    return messages


def chat_messages_for(messages: Any, dialect: BodyDialect, thinks: bool = True,
                      recall: Callable[[str], str | None] | None = None) -> Any:
    """Chat messages as a provider's dialect wants them: tool call ids, roles, successive roles merged, content, order,
    fields, a prefill, and reasoning on every assistant message (unless the request turns thinking off: `thinks` False)."""
    fix = TOOL_ID_RULES.get(dialect.tool_call_ids)
    if fix is not None:
        messages = tool_ids_as(messages, fix)
    if dialect.developer_as_system:
        messages = developer_as_system(messages)
    if dialect.merge_successive:  # before text parts become strings and reasoning is filled: one per merged message
        messages = merged_successive(messages)
    if dialect.text_content:
        messages = text_contents(messages)
    if dialect.assistant_after_tool:
        messages = bridged_tool_results(messages)
    if dialect.drop_empty_tool_calls:
        messages = without_empty_tool_calls(messages)
    if dialect.fill_tool_signatures:
        messages = signed_tool_calls(messages)
    if dialect.fill_reasoning and thinks:
        messages = reasoned_assistant_messages(messages, recall)
    if dialect.message_fields:
        messages = kept_fields(messages, dialect.message_fields)
    if dialect.prefix_last_assistant:
        messages = prefixed_last_assistant(messages)
    return messages

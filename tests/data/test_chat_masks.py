"""Chat templates -> token ids and loss masks, for ChatML (Qwen) and Llama-2 [INST] templates."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from cmat_jax.data.tokenizer import bundled_tokenizer_dir, encode_conversation, encode_prompt, load_tokenizer

# A Llama-2 chat template written for these tests: the system prompt folds into
# the first [INST] block, assistant turns are ' ' + content + ' ' + eos.
LLAMA2_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = none -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('roles must alternate user/assistant') -}}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and system is not none -%}"
    "{{- bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'].strip() + ' [/INST]' -}}"
    "{%- else -%}{{- bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' -}}{%- endif -%}"
    "{%- else -%}{{- ' ' + message['content'].strip() + ' ' + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)

CONVERSATION = [
    {"role": "system", "content": "You answer with SQL."},
    {"role": "user", "content": "How many rows are in t?"},
    {"role": "assistant", "content": "Action: Operation\n```sql\nSELECT COUNT(*) FROM t;\n```"},
    {"role": "user", "content": "[(3,)]"},
    {"role": "assistant", "content": "Final Answer: [\"3\"]"},
]


@pytest.fixture(scope="module")
def chatml():
    return load_tokenizer()


@pytest.fixture(scope="module")
def llama2():
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(bundled_tokenizer_dir() / "tokenizer.json"), bos_token="<s>", eos_token="</s>"
    )
    tok.chat_template = LLAMA2_TEMPLATE
    return tok


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _expected_from_pieces(tok, pieces):
    """Tokenize (text, trained) pieces one by one; check the concatenation is the whole text's tokenization."""
    ids, mask = [], []
    for text, trained in pieces:
        piece_ids = _ids(tok, text)
        ids += piece_ids
        mask += [int(trained)] * len(piece_ids)
    assert ids == _ids(tok, "".join(text for text, _ in pieces))
    return ids, mask


def _template_ids(tok, messages, **kwargs):
    out = tok.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_bundled_tokenizer_shape(chatml):
    assert len(chatml) == 1024
    assert chatml.eos_token == "<|im_end|>" and chatml.pad_token == "<|endoftext|>"
    assert chatml.convert_tokens_to_ids("<|im_start|>") < 1024
    text = "SELECT `Name` FROM t WHERE x = 'Zürich';\n数据库"
    assert chatml.decode(_ids(chatml, text)) == text


def test_chatml_mask_matches_hand_built_pieces(chatml):
    ids, mask = encode_conversation(chatml, CONVERSATION)
    system, user1, answer1, user2, answer2 = (m["content"] for m in CONVERSATION)
    expected_ids, expected_mask = _expected_from_pieces(
        chatml,
        [
            (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user1}<|im_end|>\n<|im_start|>assistant\n", 0),
            (f"{answer1}<|im_end|>", 1),
            (f"\n<|im_start|>user\n{user2}<|im_end|>\n<|im_start|>assistant\n", 0),
            (f"{answer2}<|im_end|>", 1),
            ("\n", 0),
        ],
    )
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    assert ids.tolist() == expected_ids == _template_ids(chatml, CONVERSATION)
    assert mask.tolist() == expected_mask


def test_llama2_mask_matches_hand_built_pieces(llama2):
    ids, mask = encode_conversation(llama2, CONVERSATION)
    system, user1, answer1, user2, answer2 = (m["content"] for m in CONVERSATION)
    expected_ids, expected_mask = _expected_from_pieces(
        llama2,
        [
            (f"<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user1} [/INST]", 0),
            (f" {answer1} </s>", 1),
            (f"<s>[INST] {user2} [/INST]", 0),
            (f" {answer2} </s>", 1),
        ],
    )
    assert ids.tolist() == expected_ids == _template_ids(llama2, CONVERSATION)
    assert mask.tolist() == expected_mask


@pytest.mark.parametrize("which", ["chatml", "llama2"])
def test_loss_false_turn_contributes_nothing(which, request):
    tok = request.getfixturevalue(which)
    silenced = [dict(m) for m in CONVERSATION]
    silenced[2]["loss"] = False
    ids_all, mask_all = encode_conversation(tok, CONVERSATION)
    ids, mask = encode_conversation(tok, silenced)
    assert ids.tolist() == ids_all.tolist()
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    # Only the last turn trains now: its tokens are exactly the trailing trained run.
    assert (ids[mask == 1] == eos).sum() == 1
    assert mask.sum() < mask_all.sum() and mask[mask_all == 0].sum() == 0
    assert tok.decode(ids[mask == 1]).strip().startswith("Final Answer")


def _chatml_oracle(tok, ids, trained):
    """Mask from token ids alone: after <|im_start|> 'assistant\\n', up to and including <|im_end|>."""
    start, end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    header = _ids(tok, "assistant\n")
    mask, turn, i = [0] * len(ids), 0, 0
    while i < len(ids):
        if ids[i] == start and ids[i + 1 : i + 1 + len(header)] == header:
            j = i + 1 + len(header)
            if end not in ids[j:]:
                break  # the generation prompt at the end
            k = ids.index(end, j)
            if trained[turn]:
                mask[j : k + 1] = [1] * (k + 1 - j)
            turn, i = turn + 1, k + 1
        else:
            i += 1
    return mask


# Characters and SQL words, including leading/trailing whitespace and newlines.
text_strategy = st.lists(
    st.sampled_from(list("abcXYZ019 \n\t'`;(),.é数") + ["SELECT", " FROM", "Action:", "\n\n"]), max_size=20
).map("".join)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(st.tuples(text_strategy, text_strategy, st.sampled_from([None, True, False])), min_size=1, max_size=4),
    system=st.one_of(st.none(), text_strategy),
    generation_prompt=st.booleans(),
)
def test_chatml_mask_property(chatml, turns, system, generation_prompt):
    messages = [] if system is None else [{"role": "system", "content": system}]
    for user, answer, loss in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer, "loss": loss}]
    if generation_prompt:
        messages.append({"role": "user", "content": "next"})
    ids, mask = encode_conversation(chatml, messages, add_generation_prompt=generation_prompt)
    assert ids.tolist() == _template_ids(chatml, [{k: m[k] for k in ("role", "content")} for m in messages],
                                         add_generation_prompt=generation_prompt)
    trained = [loss is not False for _, _, loss in turns]
    assert mask.tolist() == _chatml_oracle(chatml, ids.tolist(), trained)
    expected_text = "".join(answer + "<|im_end|>" for (_, answer, loss) in turns if loss is not False)
    assert chatml.decode(ids[mask == 1]) == expected_text


def test_encode_prompt_appends_generation_prompt(chatml, llama2):
    for tok in (chatml, llama2):
        prompt = CONVERSATION[:4]
        ids = encode_prompt(tok, prompt)
        assert ids.dtype == np.int32
        assert ids.tolist() == _template_ids(tok, prompt, add_generation_prompt=True)
    assert chatml.decode(encode_prompt(chatml, CONVERSATION[:2])).endswith("<|im_start|>assistant\n")


def test_token_straddling_prompt_and_answer_is_not_trained(chatml):
    # A generation prompt ending in a space: ' SELECT' becomes one token that
    # holds a prompt character, so the model never generates it as such.
    tok = PreTrainedTokenizerFast(tokenizer_file=str(bundled_tokenizer_dir() / "tokenizer.json"), eos_token="<|im_end|>")
    tok.chat_template = (
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{{ 'Q: ' + m['content'] + '\\n' }}"
        "{%- else -%}{{ 'A: ' + m['content'] + '<|im_end|>\\n' }}{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'A: ' }}{%- endif -%}"
    )
    ids, mask = encode_conversation(tok, [{"role": "user", "content": "count"}, {"role": "assistant", "content": "SELECT 1"}])
    pieces = [tok.decode([i]) for i in ids]
    straddler = pieces.index(" SELECT")
    assert mask[straddler] == 0
    assert tok.decode(ids[mask == 1]) == " 1<|im_end|>"


def test_template_errors_are_clear(chatml):
    not_incremental = PreTrainedTokenizerFast(tokenizer_file=str(bundled_tokenizer_dir() / "tokenizer.json"), eos_token="<|im_end|>")
    not_incremental.chat_template = "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}<|im_end|>{% endfor %}"
    with pytest.raises(ValueError, match="not a prefix"):
        encode_conversation(not_incremental, CONVERSATION[1:3] + [CONVERSATION[3]])
    rewriting = PreTrainedTokenizerFast(tokenizer_file=str(bundled_tokenizer_dir() / "tokenizer.json"), eos_token="<|im_end|>")
    rewriting.chat_template = "{% for m in messages %}{{ m['content'] | upper }}<|im_end|>{% endfor %}"
    with pytest.raises(ValueError, match="does not appear verbatim"):
        encode_conversation(rewriting, CONVERSATION[1:3])
    no_generation_prompt = PreTrainedTokenizerFast(tokenizer_file=str(bundled_tokenizer_dir() / "tokenizer.json"),
                                                   eos_token="<|im_end|>")
    no_generation_prompt.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}")
    with pytest.raises(ValueError, match=r"writes no generation prompt.*'<\|im_start\|>assistant\\n'"):
        encode_conversation(no_generation_prompt, CONVERSATION[1:3])
    no_template = PreTrainedTokenizerFast(tokenizer_file=str(bundled_tokenizer_dir() / "tokenizer.json"))
    with pytest.raises(ValueError, match="no chat template"):
        encode_conversation(no_template, CONVERSATION)
    with pytest.raises(ValueError, match="only assistant turns"):
        encode_conversation(chatml, [{"role": "user", "content": "x", "loss": True}])
    with pytest.raises(ValueError, match="role 'tool'"):
        encode_conversation(chatml, [{"role": "tool", "content": "x"}])


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "README.md").write_text("no tokenizer here")
    with pytest.raises(FileNotFoundError, match=r"holds no tokenizer files.*README\.md"):
        load_tokenizer(tmp_path)


def test_template_without_end_of_turn_token_trains_the_content_only():
    tok = PreTrainedTokenizerFast(tokenizer_file=str(bundled_tokenizer_dir() / "tokenizer.json"))
    tok.chat_template = (
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{{ 'User: ' + m['content'] + '\\n' }}"
        "{%- else -%}{{ 'Bot:\\n' + m['content'] + '\\n\\n' }}{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'Bot:\\n' }}{%- endif -%}"
    )
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "a b"},
                {"role": "user", "content": "b"}, {"role": "assistant", "content": "SELECT 1;"}]
    ids, mask = encode_conversation(tok, messages)
    assert tok.decode(ids[mask == 1]) == "a bSELECT 1;"


def test_conversation_opening_with_assistant_turn_is_explained(chatml):
    with pytest.raises(ValueError, match="opens with an assistant turn"):
        encode_conversation(chatml, [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}])


def test_original_qwen_tiktoken_directory_is_refused(tmp_path):
    (tmp_path / "qwen.tiktoken").write_text("")
    with pytest.raises(ValueError, match="original Qwen tokenizer"):
        load_tokenizer(tmp_path)

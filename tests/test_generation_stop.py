"""Batched greedy generation that stops each row at the end of its answer line (tiny random models)."""

from __future__ import annotations

import pytest
from lm_helpers import PROMPTS, scripted, sharp_lm

from pipeline.core.answer import answer_line_done, format_answer
from pipeline.models.generation import generate, generate_ids, generate_replies
from pipeline.models.lm import encode_chat_prompt

pytestmark = pytest.mark.usefixtures("one_thread")


def test_answer_line_done_on_growing_replies():
    line = format_answer({"motion": "flyby", "operation": "none", "task": "unclear"}, "en")
    assert answer_line_done(f"Trend: closing.\n{line}")
    assert not answer_line_done(f"Trend: closing.\n{line[:-2]}")  # the task label is still being written
    assert not answer_line_done("Trend: closing.\nAnswer: motion=flyby; operation=none")
    assert answer_line_done("Answer: motion=flyby; operation=none\n")  # a finished (if odd) answer line
    assert not answer_line_done("Trend: closing.\nCheck: no burns.\n")
    assert answer_line_done(format_answer({"motion": "flyby", "operation": "none", "task": "unclear"}, "zh"))


SCRIPTS = [
    "Trend: closing.\nAnswer: motion=flyby; operation=none; task=unclear\nTrend: and on and on",
    "Answer: motion=hovering; operation=none; task=surveillance and more words",
    "no answer line here at all, just words words words words",
]


def test_rows_stop_at_the_end_of_their_answer_line(tok):
    lm = sharp_lm("llama")
    enc = [encode_chat_prompt(tok, p) for p in PROMPTS]
    budget = 40
    state = scripted(lm, tok, SCRIPTS)
    state["rows"] = [0, 1, 2]
    stop = lambda ids: answer_line_done(tok.decode(ids, skip_special_tokens=True))  # noqa: E731
    got = generate_ids(lm, enc, budget, eos_ids=[-1], pad_id=tok.pad_token_id, stop=stop)
    texts = [tok.decode(r, skip_special_tokens=True) for r in got]
    assert texts[0] == "Trend: closing.\nAnswer: motion=flyby; operation=none; task=unclear"
    assert texts[1] == "Answer: motion=hovering; operation=none; task=surveillance"
    assert len(got[2]) == budget  # no answer line: the budget ends it
    assert state["step"] == budget  # ... and only it kept the batch going


def test_without_row_three_the_batch_ends_with_its_last_answer_line(tok):
    lm = sharp_lm("llama")
    state = scripted(lm, tok, SCRIPTS)
    state["rows"] = [0, 1]
    replies = generate_replies(lm, tok, PROMPTS[:2], max_new_tokens=64, batch_size=2)
    assert [r.text for r in replies] == [SCRIPTS[0].split("\nTrend: and")[0], SCRIPTS[1].split(" and more")[0]]
    n0 = len(tok(replies[0].text, add_special_tokens=False)["input_ids"])
    assert replies[0].new_tokens == n0 and state["step"] == max(r.new_tokens for r in replies) < 64


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_batched_equals_unbatched_with_rows_stopping_at_different_steps(name, tok):
    lm = sharp_lm(name)
    enc = [encode_chat_prompt(tok, p) for p in PROMPTS]
    free = generate_ids(lm, enc, 8, eos_ids=[-1], pad_id=tok.pad_token_id)
    # a row stops after the token it first repeats (rows stop at different steps, one maybe never)
    stop = lambda ids: len(ids) > 1 and ids[-1] in ids[:-1]  # noqa: E731
    batched = generate_ids(lm, enc, 8, eos_ids=[-1], pad_id=tok.pad_token_id, stop=stop)
    single = [generate_ids(lm, [e], 8, eos_ids=[-1], pad_id=tok.pad_token_id, stop=stop)[0] for e in enc]
    assert batched == single
    for full, cut in zip(free, batched):
        assert cut == full[: len(cut)] and (len(cut) == 8 or stop(cut))
    # the text API with the answer-line stop: batched == one at a time
    assert generate(lm, tok, PROMPTS, 8, batch_size=3) == [generate(lm, tok, [p], 8, batch_size=1)[0] for p in PROMPTS]

"""Chapter 2: listwise prompts and single-token identifiers (FIRST §3.1-3.2)."""
import copy

import pytest

from minirank import prompts as P

PASSAGES = ["Paris is the capital and largest city of France.",
            "Berlin is the capital of Germany.\nIt has many museums.",
            "Bananas are yellow when ripe."]


# ---------------------------------------------------------------- identifiers

def test_identifiers_alpha_and_numeric():
    assert P.identifiers(3) == ["A", "B", "C"]
    assert P.identifiers(20)[-1] == "T"
    assert P.identifiers(26)[-1] == "Z"
    assert P.identifiers(12, "numeric") == [str(i) for i in range(1, 13)]
    assert P.identifiers(0) == []


def test_more_candidates_than_identifiers_is_a_clear_error():
    with pytest.raises(ValueError, match="27 identifiers.*only 26"):
        P.identifiers(27, "alpha")
    with pytest.raises(ValueError, match="unknown identifier style 'roman'"):
        P.identifiers(3, "roman")
    with pytest.raises(ValueError, match=">= 0"):
        P.identifiers(-1)


def test_letters_and_digits_are_single_tokens_after_the_bracket(tok):
    assert P.identifier_token_ids(tok, P.identifiers(20)) == list(range(49, 69))  # 'A'=49 ... 'T'=68
    assert P.identifier_token_ids(tok, ["[A]", "B", " [C] "]) == [49, 50, 51]
    assert P.identifier_token_ids(tok, P.identifiers(9, "numeric")) == list(range(33, 42))


@pytest.mark.parametrize("n", [10, 12, 20])
def test_numeric_identifiers_from_ten_are_two_tokens(tok, n):
    with pytest.raises(ValueError, match=r"'\[10\]': '10' is 2 tokens"):
        P.identifier_token_ids(tok, P.identifiers(n, "numeric"))
    with pytest.raises(ValueError, match=r"'\[20\]'"):
        P.identifier_token_ids(tok, ["20"])


class SplittingTokenizer:
    """Wraps a tokenizer but writes 'C' as two tokens and merges '[' with 'D' (what BPE might do)."""

    def __init__(self, inner):
        self.inner = inner

    def encode(self, text, add_special_tokens=False):
        ids = []
        for ch in text:
            if ch == "C":
                ids += [900, 901]
            elif ch == "D" and ids and ids[-1] == 75:
                ids[-1] = 902
            else:
                ids += self.inner.encode(ch, add_special_tokens=False)
        return ids


def test_tokenizer_that_splits_or_merges_an_identifier_is_named(tok):
    odd = SplittingTokenizer(tok)
    assert P.identifier_token_ids(odd, ["A", "B"]) == [49, 50]
    with pytest.raises(ValueError, match=r"'\[C\]': 'C' is 2 tokens \[900, 901\]"):
        P.identifier_token_ids(odd, ["A", "B", "C"])
    with pytest.raises(ValueError, match=r"'\[D\]': this tokenizer merges '\[' and 'D'"):
        P.identifier_token_ids(odd, ["D"])


# ---------------------------------------------------------------- the prompt

def test_prompt_lists_passages_in_order_and_ends_on_the_opening_bracket(tok):
    prompt = P.build_prompt("capital of france", PASSAGES, tok)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>assistant\n[")
    assert prompt.count("capital of france") == 2  # before and after the passages
    lines = [line for line in prompt.splitlines() if line[:3] in ("[A]", "[B]", "[C]")]
    assert lines == ["[A] " + PASSAGES[0], "[B] Berlin is the capital of Germany. It has many museums.",
                     "[C] " + PASSAGES[2]]
    assert "[D]" not in prompt
    ids = P.encode(tok, [prompt])[0][0].tolist()
    assert ids[-1] == tok.encode("[", add_special_tokens=False)[0] == 75  # the next token is the letter
    assert ids[-5:-1] == tok.encode("<|im_start|>assistant\n", add_special_tokens=False)


def test_numeric_prompt(tok):
    prompt = P.build_prompt("q", PASSAGES, tok, style="numeric")
    assert "\n[1] Paris" in prompt and "\n[3] Bananas" in prompt and "[A]" not in prompt
    assert prompt.endswith("[")


def test_passages_are_truncated_to_a_token_budget(tok):
    long = " ".join(f"word{i}" for i in range(200))
    short, = P.truncate_passages(["a short passage"], tok, 8)
    cut, = P.truncate_passages([long], tok, 8)
    assert short == "a short passage"
    assert len(tok.encode(cut, add_special_tokens=False)) <= 8 and long.startswith(cut)
    assert P.truncate_passages([long], tok, None) == [long]
    prompt = P.build_prompt("q", [long, "b"], tok, max_passage_tokens=8)
    assert "word199" not in prompt and f"[A] {cut}\n[B] b" in prompt
    with pytest.raises(ValueError, match="max_passage_tokens must be a positive integer"):
        P.build_prompt("q", ["x"], tok, max_passage_tokens=0)


def test_empty_candidate_list_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="at least one passage"):
        P.build_prompt("q", [], tok)
    with pytest.raises(ValueError, match="27 identifiers"):
        P.build_prompt("q", ["p"] * 27, tok)


def test_plain_fallback_without_a_chat_template(tok):
    plain = copy.copy(tok)
    plain.chat_template = None
    prompt = P.build_prompt("q", PASSAGES, plain)
    assert "<|im_start|>" not in prompt
    assert prompt.startswith(P.SYSTEM) and prompt.endswith("\n\nRanking: [")
    assert "\n[A] Paris" in prompt


def test_template_without_a_system_turn_gets_it_folded_into_the_user_turn(tok):
    class NoSystem:
        chat_template = "x"

        def __init__(self, inner):
            self.inner = inner

        def __call__(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        def apply_chat_template(self, messages, **kwargs):
            if messages[0]["role"] == "system":
                raise ValueError("System role not supported")
            return self.inner.apply_chat_template(messages, **kwargs)

    prompt = P.build_prompt("q", PASSAGES, NoSystem(tok))
    assert prompt.count("<|im_start|>user\n" + P.SYSTEM) == 1 and prompt.endswith("assistant\n[")


def test_encode_pads_on_the_left(tok):
    ids, mask = P.encode(tok, ["a b c d e f", "a"])
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert mask[:, -1].tolist() == [1, 1]  # every prompt ends in the last column
    assert mask[1].tolist()[0] == 0 and ids[1, 0].item() == tok.pad_token_id
    assert ids[1, -1].item() == tok.encode("a", add_special_tokens=False)[0]
    with pytest.raises(ValueError, match="no prompts"):
        P.encode(tok, [])

"""Built-in GRPO rewards on hand-made completions (malformed ones included), and user rewards' failure modes."""

import json
import threading

import pytest
from pydantic import ValidationError

from tuneroute_testing.process import QuietHandler, http_server
from tuneroute_trainer.config import GrpoSpec
from tuneroute_trainer.contract import describe
from tuneroute_trainer.errors import InputError
from tuneroute_trainer.rewards import RewardFailed, build_rewards, preflight


def reward(spec: dict, **grpo):
    (r,) = build_rewards(GrpoSpec.model_validate({"rewards": [{"name": "r", **spec}], **grpo}))
    return r


def score(spec: dict, completions: list, references=None, **grpo) -> list:
    r = reward(spec, **grpo)
    cols = {"answer": references} if references is not None else {}
    return r(prompts=["q"] * len(completions), completions=completions, **cols)


def test_numeric_match_reads_boxed_answers_then_the_last_number():
    completions = [
        r"so the answer is \boxed{42}",
        r"first 3, then \boxed{ 42 } and 7 later",  # the boxed answer wins over a later number
        "2 + 40 = 42",
        "42.0",
        "1,234 apples",
        r"\boxed{3/4}",
        "the total is -5.",
        r"\boxed{\frac{1}{2}}",  # not a plain number: no credit
        "no number here",
        "",
        r"\boxed{42",  # unbalanced box: falls back to the last number
    ]
    refs = ["42", "42", "42", "42", "1234", "0.75", "-5", "0.5", "1", "1", "42"]
    assert score({"numericMatch": {}}, completions, refs) == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1]


def test_numeric_match_tolerance_and_unreadable_references():
    assert score({"numericMatch": {"tolerance": 0.01}}, ["3.14159", "3.2"], ["3.14", 3.14]) == [1, 0]
    # a reference that is not a number (or missing) makes the sample not applicable: None, never 0
    assert score({"numericMatch": {}}, ["42", "42", "42"], ["forty-two", None, True]) == [None, None, None]
    # a worked reference solution counts by its own final answer (GSM8K's "#### 72", a boxed answer)
    assert score({"numericMatch": {}}, ["72", "so 72", "71"], ["48 + 24 = 72\n#### 72", r"\boxed{72}", "#### 72"]) == [
        1,
        1,
        0,
    ]


def test_exact_match_trims_ignores_case_and_prefers_the_boxed_answer():
    completions = [
        "  Paris \n",
        r"I think \boxed{paris}",
        "paris, france",
        "PARIS",
        [{"role": "assistant", "content": "Paris"}],
    ]
    assert score({"exactMatch": {}}, completions, ["Paris"] * 5) == [1, 1, 0, 1, 1]
    assert score({"exactMatch": {"caseSensitive": True}}, ["PARIS", "Paris"], ["Paris", "Paris"]) == [0, 1]


def test_regex_search_and_full_match():
    texts = ["<think>a</think>42", "42", "<think>unclosed 42", ""]
    assert score({"regex": {"pattern": r"<think>.*</think>"}}, texts) == [1, 0, 0, 0]
    assert score({"regex": {"pattern": r"\d+", "fullMatch": True}}, texts) == [0, 1, 0, 0]


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_parses_validates_and_refuses_malformed_json():
    texts = [
        '{"name": "Ada", "age": 36}',
        '```json\n{"name": "Ada", "age": 36}\n```',  # a fenced block is unwrapped
        '{"name": "Ada"}',  # missing a required key
        '{"name": "Ada", "age": -1}',  # violates minimum
        '{"name": "Ada", "age": 36, "x": 1}',  # extra key
        '{"name": "Ada", "age": 36',  # truncated
        "{'name': 'Ada', 'age': 36}",  # Python, not JSON
        'Sure! {"name": "Ada", "age": 36}',  # prose around it
        "",
        "null",
    ]
    assert score({"jsonSchema": {"schema": SCHEMA}}, texts) == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]


def test_length_penalty_counts_tokens_and_falls_to_minus_one():
    r = reward({"lengthPenalty": {"targetTokens": 10}}, maxCompletionLength=20)
    ids = [[0] * n for n in (0, 10, 15, 20, 40)]
    assert r(prompts=["q"] * 5, completions=["x"] * 5, completion_ids=ids) == [0, 0, -0.5, -1, -1]


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"name": "r", "regex": {"pattern": "(unclosed"}},
            "grpo.rewards[0].regex.pattern: not a valid regular expression",
        ),
        (
            {"name": "r", "jsonSchema": {"schema": {"type": "banana"}}},
            "grpo.rewards[0].jsonSchema.schema: not a JSON Schema",
        ),
        (
            {"name": "r", "jsonSchema": {"schema": {"required": "name"}}},
            "grpo.rewards[0].jsonSchema.schema: not a JSON Schema",
        ),
        ({"name": "r", "cosineSimilarity": {}}, "grpo.rewards[0].cosineSimilarity: Extra inputs are not permitted"),
        ({"name": "r"}, "grpo.rewards[0]: set exactly one of exactMatch, numericMatch, regex"),
        ({"name": "r", "regex": {"pattern": "a"}, "exactMatch": {}}, "grpo.rewards[0]: set exactly one of"),
        ({"name": "Bad Name", "regex": {"pattern": "a"}}, "grpo.rewards[0].name:"),
        ({"name": "r", "http": {"url": "ftp://x"}}, "grpo.rewards[0].http.url:"),
        (
            {"name": "r", "lengthPenalty": {"targetTokens": 300}},
            "grpo.rewards: lengthPenalty.targetTokens must be below maxCompletionLength",
        ),
    ],
)
def test_bad_reward_specs_name_the_field(spec, message):
    from tuneroute_trainer.config import TrainerConfig

    cfg = {
        "model": {"path": "/m"},
        "dataset": {"path": "/d.jsonl", "format": "completion"},
        "method": "grpo",
        "grpo": {"rewards": [spec]},
        "output": {"dir": "/o", "adapterName": "a"},
    }
    with pytest.raises(ValidationError) as e:
        TrainerConfig.model_validate(cfg)
    assert describe(e.value).startswith(message), describe(e.value)


def test_grpo_cross_field_rules():
    from tuneroute_trainer.config import TrainerConfig

    base = {
        "model": {"path": "/m"},
        "dataset": {"path": "/d.jsonl", "format": "completion"},
        "output": {"dir": "/o", "adapterName": "a"},
    }
    rewards = [{"name": "r", "regex": {"pattern": "a"}}]
    cases = [
        ({"method": "grpo"}, "grpo: method grpo needs the grpo section"),
        ({"method": "sft", "grpo": {"rewards": rewards}}, "grpo: method grpo needs the grpo section"),
        (
            {"method": "grpo", "grpo": {"rewards": rewards, "beta": 0.04}},
            "grpo.beta: asynchronous GRPO has no reference",
        ),
        ({"method": "grpo", "grpo": {"rewards": rewards * 2}}, "grpo.rewards: reward names must be unique"),
        (
            {"method": "grpo", "grpo": {"rewards": rewards, "rollouts": {"engine": "vllm"}}},
            "grpo.rollouts.vllm: set vllm exactly when engine is vllm",
        ),
        ({"method": "grpo", "grpo": {"rewards": []}}, "grpo.rewards: List should have at least 1 item"),
        (
            {"method": "grpo", "grpo": {"rewards": rewards}, "dataset": {"path": "/d.jsonl", "format": "preference"}},
            "dataset.format: a preference dataset needs method dpo",
        ),
    ]
    for over, message in cases:
        with pytest.raises(ValidationError) as e:
            TrainerConfig.model_validate({**base, **over})
        assert describe(e.value).startswith(message), describe(e.value)
    ok = TrainerConfig.model_validate(
        {**base, "method": "grpo", "grpo": {"rewards": rewards, "beta": 0.04, "async": False}}
    )
    assert ok.grpo.beta == 0.04 and ok.grpo.async_ is False


def test_python_reward_from_a_file(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text(
        "def score(prompts, completions, answer, **kw):\n"
        "    return [1.0 if c.endswith(a) else (None if a == '?' else 0.0) for c, a in zip(completions, answer)]\n"
    )
    r = reward({"python": {"path": str(f), "function": "score"}})
    assert r(prompts=["p"] * 3, completions=["x=5", "x=6", "y"], answer=["5", "5", "?"]) == [1.0, 0.0, None]


@pytest.mark.parametrize(
    "source, function, message",
    [
        (None, "reward", "grpo.rewards[0].python.path: file {path} not found"),
        (
            "import no_such_module_anywhere\n",
            "reward",
            "grpo.rewards[0].python.path: {path} does not import: ModuleNotFoundError",
        ),
        ("def reward(:\n", "reward", "grpo.rewards[0].python.path: {path} does not import: SyntaxError"),
        ("raise SystemExit(3)\n", "reward", "grpo.rewards[0].python.path: {path} does not import: SystemExit"),
        (
            "def other(**kw): pass\n",
            "reward",
            "grpo.rewards[0].python.function: {path} has no function 'reward'; it defines other",
        ),
        ("reward = 3\n", "reward", "grpo.rewards[0].python.function: 'reward' in {path} is not callable"),
    ],
)
def test_python_reward_that_cannot_load_is_an_input_error(tmp_path, source, function, message):
    path = tmp_path / "r.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(InputError) as e:
        reward({"python": {"path": str(path), "function": function}})
    assert str(e.value).startswith(message.format(path=path)), str(e.value)


@pytest.mark.parametrize(
    "body, message",
    [
        ("    return 1.0\n", "expected a list of 2 numbers (or nulls), got float"),
        ("    return [1.0]\n", "expected a list of 2 numbers (or nulls), got 1 values"),
        ("    return [1.0, 'good']\n", "every value must be a finite number or null, got 'good'"),
        ("    return [1.0, float('nan')]\n", "every value must be a finite number or null, got nan"),
        ("    raise KeyError('answer')\n", "KeyError: 'answer'"),
    ],
)
def test_python_reward_that_misbehaves_during_training_fails_clearly(tmp_path, body, message):
    path = tmp_path / "r.py"
    path.write_text("def reward(prompts, completions, **kw):\n" + body)
    r = reward({"python": {"path": str(path)}})
    with pytest.raises(RewardFailed) as e:
        r(prompts=["p", "p"], completions=["a", "b"])
    assert str(e.value) == f"grpo.rewards[0].python ({path}:reward): {message}"


class _Judge(QuietHandler):
    """A real HTTP scoring endpoint: rewards completions that mention the reference; 'slow' mode never answers in time."""

    mode = "ok"
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append(body)
        if _Judge.mode == "slow":
            threading.Event().wait(1)
            return  # the client gave up long ago
        if _Judge.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        out = {"rewards": [1.0 if (r or "") in c else 0.0 for c, r in zip(body["completions"], body["references"])]}
        if _Judge.mode == "short":
            out["rewards"] = out["rewards"][:1]
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge():
    _Judge.mode, _Judge.seen = "ok", []
    with http_server(_Judge, "/score") as url:
        yield url


def test_http_reward_scores_a_batch(judge):
    r = reward({"http": {"url": judge}})
    assert r(prompts=["p1", "p2"], completions=["it is 7", "it is 8"], answer=["7", "7"]) == [1.0, 0.0]
    assert _Judge.seen[-1] == {"prompts": ["p1", "p2"], "completions": ["it is 7", "it is 8"], "references": ["7", "7"]}


@pytest.mark.parametrize("mode", ["slow", "error", "short"])
def test_http_reward_failures_are_counted_never_zero_and_end_the_job(judge, mode):
    _Judge.mode = mode
    r = reward({"http": {"url": judge, "timeoutSeconds": 0.3, "maxConsecutiveFailures": 2}})
    # an unscorable batch is None (left out of the reward sum by trl), and counted
    assert r(prompts=["p", "p"], completions=["7", "8"], answer=["7", "7"]) == [None, None]
    assert r.errors == 1
    with pytest.raises(RewardFailed) as e:  # the second failure in a row ends training with the cause
        r(prompts=["p", "p"], completions=["7", "8"], answer=["7", "7"])
    assert str(e.value).startswith("grpo.rewards[0].http: 2 batches in a row could not be scored; last: ")
    assert r.errors == 2


def test_http_reward_recovers_after_a_failure(judge):
    r = reward({"http": {"url": judge, "timeoutSeconds": 0.3, "maxConsecutiveFailures": 2}})
    _Judge.mode = "error"
    assert r(prompts=["p"], completions=["7"], answer=["7"]) == [None]
    _Judge.mode = "ok"
    assert r(prompts=["p"], completions=["7"], answer=["7"]) == [1.0]
    _Judge.mode = "error"
    assert r(prompts=["p"], completions=["7"], answer=["7"]) == [None]  # the count of failures in a row restarted
    assert r.errors == 2


def test_preflight_refuses_an_endpoint_that_times_out_and_a_missing_reference_column(judge):
    _Judge.mode = "slow"
    rewards = build_rewards(
        GrpoSpec.model_validate({"rewards": [{"name": "judge", "http": {"url": judge, "timeoutSeconds": 0.3}}]})
    )
    with pytest.raises(InputError) as e:
        preflight(rewards, ["prompt", "answer"], "q")
    assert (
        str(e.value)
        == f"grpo.rewards[0].http.url: the endpoint did not score a probe batch: no answer from {judge} within 0.3 s"
    )

    rewards = build_rewards(GrpoSpec.model_validate({"rewards": [{"name": "ok", "numericMatch": {}}]}))
    with pytest.raises(InputError) as e:
        preflight(rewards, ["prompt", "solution"], "q")
    assert str(e.value).startswith("grpo.referenceColumn: reward 'ok' (numericMatch) compares with a reference answer")
    preflight(rewards, ["prompt", "answer"], "q")  # fine with the column there


def test_trainer_errors_name_the_finetunejob_field_the_user_wrote():
    from tuneroute_trainer.config import spec_field

    assert spec_field("grpo.rewards[2].python.path") == "spec.grpo.rewards[2].python.key"
    assert spec_field("grpo.rewards[0].http.url") == "spec.grpo.rewards[0].http.url"
    assert spec_field("grpo.rollouts.vllm.url") == "spec.grpo.rollouts.vllm"
    assert spec_field("grpo.referenceColumn") == "spec.grpo.referenceColumn"

"""The bundled task models: they load by name, answer as their training run recorded, and the
training script reproduces them."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from hardwire.model.load import BUNDLED_MODELS
from hardwire.runtime.engine import make_engine
from hardwire.ttc.task_models import RECIPES, SAMPLE_COUNT, build_tokenizer, main as train_main
from hardwire.ttc.tasks import load_tasks

TASK_MODELS = ("task-small", "task-medium", "task-large")
# Retraining on another machine may round differently along the way; the recorded held-out accuracy
# (500 problems per task set) must come back within this many points.
RETRAIN_TOLERANCE = 0.05


def record(name: str) -> dict:
    return json.loads((BUNDLED_MODELS[name] / "training.json").read_text())


def greedy_correct(engine, task_set: str, count: int) -> int:
    correct = 0
    for task in load_tasks(f"{task_set}:{count}"):
        ids = engine.tokenizer.encode(task.prompt)
        answer = engine.generate(ids, max_tokens=task.max_tokens, stop=task.stop).text
        correct += task.verifier.check(answer, task.prompt).passed
    return correct


@pytest.mark.parametrize("name", TASK_MODELS)
def test_committed_weights_reach_their_recorded_accuracy(name):
    """hardwire's float reference, on the first held-out problems, answers as the torch model did
    when the training run recorded it (a tie flipped by float rounding is allowed for)."""
    data = record(name)
    engine = make_engine(name)
    assert engine.spec.parameter_count() == data["parameters"]
    for task_set, expected in data["sample_check"]["greedy_correct"].items():
        assert abs(greedy_correct(engine, task_set, data["sample_check"]["count"]) - expected) <= 1, task_set


def test_the_family_differs_in_size_and_accuracy():
    """Sizes grow by more than 20x from small to large, and the largest is more accurate than the
    smallest on both task sets. Accuracy is not monotone in size on `expr` (task-medium is the best
    there; docs/time-to-correct.md), so only the ends are compared."""
    records = [record(name) for name in TASK_MODELS]
    sizes = [r["parameters"] for r in records]
    assert sizes == sorted(sizes) and sizes[-1] > 20 * sizes[0]
    for task_set in ("add", "expr"):
        accuracy = [r["held_out_greedy_accuracy"][task_set] for r in records]
        assert accuracy[-1] > accuracy[0], (task_set, accuracy)
    assert records[-1]["held_out_greedy_accuracy"]["add"] > 0.9 > 0.5 > records[0]["held_out_greedy_accuracy"]["add"]


def test_character_tokenizer_round_trips_task_text():
    tokenizer = build_tokenizer()
    text = "38+47=84\ntoo low\n38+47="
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) == len(text) and tokenizer.decode(ids) == text


def test_bundled_names_work_on_the_command_line(cli):
    payload = json.loads(cli("run", "task-large", "--prompt", "12+30=", "--max-tokens", "6", "--json").stdout)
    assert payload["prompt_ids"][0] == 1 and payload["text"].strip().lstrip("-").isdigit()


@pytest.mark.slow
@pytest.mark.parametrize("name", TASK_MODELS)
def test_training_script_reproduces_the_committed_accuracy(name, tmp_path):
    assert train_main(["--models", name, "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / name / "training.json").read_text())
    committed = record(name)
    assert again["recipe"] == committed["recipe"] == asdict(RECIPES[name])
    for task_set in ("add", "expr"):
        assert again["held_out_greedy_accuracy"][task_set] == pytest.approx(
            committed["held_out_greedy_accuracy"][task_set], abs=RETRAIN_TOLERANCE), task_set

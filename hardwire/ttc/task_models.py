"""The bundled task models: a family of small Llama-shaped models trained here, on CPU, on the
bundled task generators, so time to correct can be measured on real trained models.

    python -m hardwire.ttc.task_models                      # retrain all three into hardwire/data/
    python -m hardwire.ttc.task_models --models task-small --out /tmp/models

Everything that made the committed weights is in this file: the character vocabulary, the model
shapes, the data recipe (training split of the `add` and `expr` generators, some examples with a
failed attempt and the verifier's feedback before the correct answer), the optimiser schedule and
the seed. Each model is written as a Hugging Face folder (config.json, model.safetensors,
tokenizer.json), which hardwire imports like any checkpoint, with `training.json` recording the
recipe and the held-out accuracy the run reached.

Training needs torch and transformers (`pip install torch==2.13.0 transformers`); using the models
needs neither. Transformers' own `LlamaForCausalLM` is trained, so the exported checkpoint means
exactly what hardwire's float reference (checked against transformers) computes.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hardwire.ttc.tasks import GENERATORS, Problem, feedback_prompt, problems
from hardwire.ttc.verifiers import NumericVerifier

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
# Every character a task, an answer or a verifier message of the bundled tasks uses, plus room.
CHARACTERS = "0123456789+-*=()., \n" + "abcdefghijklmnopqrstuvwxyz"
MAX_CONTEXT = 64                 # a feedback retry: two prompts, one answer, one message
TASK_MIX = ("add", "expr")       # drawn with equal probability
FEEDBACK_SHARE = 0.3             # share of examples that show a failed attempt and its feedback
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Recipe:
    """One model of the family: its shape and its optimiser schedule."""
    hidden: int
    layers: int
    heads: int
    ffn: int
    steps: int
    learning_rate: float
    batch: int = 128
    warmup_steps: int = 100
    weight_decay: float = 0.01


RECIPES = {
    "task-small": Recipe(hidden=48, layers=2, heads=4, ffn=128, steps=6000, learning_rate=3e-3),
    "task-medium": Recipe(hidden=112, layers=3, heads=4, ffn=320, steps=4000, learning_rate=2e-3),
    "task-large": Recipe(hidden=192, layers=4, heads=6, ffn=512, steps=4000, learning_rate=2e-3, batch=96),
}
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "task-models"


# -- vocabulary ------------------------------------------------------------------------------------

def vocabulary() -> dict[str, int]:
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in CHARACTERS:
        vocab[char] = len(vocab)
    return vocab


def build_tokenizer():
    """A character-level Hugging Face tokenizer: a BPE model with no merges splits text into
    characters; the Fuse decoder joins them back without spaces."""
    from tokenizers import Tokenizer, decoders, models

    tokenizer = Tokenizer(models.BPE(vocab=vocabulary(), merges=[], unk_token="<unk>"))
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def encode(text: str) -> list[int]:
    vocab = vocabulary()
    return [vocab.get(char, UNK_ID) for char in text]


# -- data ------------------------------------------------------------------------------------------

def plausible_mistake(answer: int, rng: random.Random) -> int:
    """A wrong answer of the kind small models give: one digit off, or off by 1, 10 or 100."""
    while True:
        if rng.random() < 0.5:
            digits = list(str(abs(answer)))
            i = rng.randrange(len(digits))
            digits[i] = str(rng.choice([d for d in range(10) if str(d) != digits[i]]))
            wrong = int("".join(digits)) * (-1 if answer < 0 else 1)
        else:
            wrong = answer + rng.choice((-1, 1)) * rng.choice((1, 10, 100))
        if wrong != answer:
            return wrong


def training_example(streams: dict, rng: random.Random, with_feedback: bool) -> tuple[list[int], list[int]]:
    """(ids, targets): BOS + text + EOS, targets -100 except on the answer that is learned and EOS."""
    problem: Problem = next(streams[rng.choice(TASK_MIX)])
    answer = str(problem.answer)
    context = problem.prompt
    if with_feedback:
        wrong = str(plausible_mistake(problem.answer, rng))
        message = NumericVerifier(float(problem.answer)).check(wrong, problem.prompt).message
        context = feedback_prompt(problem.prompt, wrong, message)
    ids = [BOS_ID] + encode(context) + encode(answer) + [EOS_ID]
    learned = len(answer) + 1
    targets = [-100] * (len(ids) - learned) + ids[-learned:]
    return ids, targets


def training_batch(streams: dict, rng: random.Random, size: int):
    """A batch of plain examples or, with probability FEEDBACK_SHARE, of feedback examples: one
    kind per batch keeps the padding (and so the step time) small."""
    import torch

    with_feedback = rng.random() < FEEDBACK_SHARE
    examples = [training_example(streams, rng, with_feedback) for _ in range(size)]
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((size, width), PAD_ID, dtype=torch.long)
    labels = torch.full((size, width), -100, dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, :len(x)] = torch.tensor(x)
        labels[row, :len(y)] = torch.tensor(y)
    return ids, labels


# -- model -----------------------------------------------------------------------------------------

def make_model(recipe: Recipe):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(vocabulary()), hidden_size=recipe.hidden, intermediate_size=recipe.ffn,
                         num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                         num_key_value_heads=recipe.heads, max_position_embeddings=MAX_CONTEXT,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                         bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return LlamaForCausalLM(config).to(torch.float32)


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(recipe: Recipe, seed: int, log=print):
    """Train one model from scratch on fresh training-split problems every step."""
    import torch

    torch.manual_seed(seed)
    model = make_model(recipe)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.learning_rate,
                                  betas=(0.9, 0.98))
    rng = random.Random(seed)
    streams = {name: problems(name, seed, held_out=False) for name in TASK_MIX}
    history = []
    started = time.time()
    model.train()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(recipe, step)
        ids, labels = training_batch(streams, rng, recipe.batch)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(loss.item())
        if (step + 1) % 250 == 0 or step + 1 == recipe.steps:
            recent = sum(history[-250:]) / len(history[-250:])
            elapsed = time.time() - started
            log(f"  step {step + 1:>5}/{recipe.steps}  loss {recent:.4f}  {elapsed:6.0f} s  "
                f"eta {elapsed / (step + 1) * (recipe.steps - step - 1):5.0f} s")
    model.eval()
    return model, history, time.time() - started


# -- evaluation ------------------------------------------------------------------------------------

def greedy_answers(model, prompts: list[str], max_tokens: int = 8) -> list[str]:
    """Greedy completions (up to EOS), batched by prompt length, with full recomputation (the
    models are tiny; this is the torch side of the check, independent of hardwire's engines)."""
    import torch

    answers: dict[int, str] = {}
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    vocab_chars = {i: token for token, i in vocabulary().items()}
    with torch.no_grad():
        for indexes in by_length.values():
            ids = torch.tensor([[BOS_ID] + encode(prompts[i]) for i in indexes])
            done = torch.zeros(len(indexes), dtype=torch.bool)
            out = [[] for _ in indexes]
            for _ in range(max_tokens):
                next_ids = model(input_ids=ids).logits[:, -1].argmax(-1)
                for row, token in enumerate(next_ids.tolist()):
                    if not done[row]:
                        if token in (EOS_ID, BOS_ID):
                            done[row] = True
                        else:
                            out[row].append(vocab_chars.get(token, "") if token >= len(SPECIAL_TOKENS) else "")
                ids = torch.cat([ids, next_ids[:, None]], dim=1)
                if bool(done.all()):
                    break
            for row, i in enumerate(indexes):
                answers[i] = "".join(out[row])
    return [answers[i] for i in range(len(prompts))]


def greedy_correct(model, task_set: str, count: int) -> list[bool]:
    """Whether the greedy answer to each of the first `count` held-out tasks of a set is verified."""
    from hardwire.ttc.tasks import load_tasks

    tasks = load_tasks(f"{task_set}:{count}")
    answers = greedy_answers(model, [t.prompt for t in tasks])
    return [t.verifier.check(a.split("\n")[0], t.prompt).passed for t, a in zip(tasks, answers)]


# -- export ----------------------------------------------------------------------------------------

CALIBRATION_EXAMPLES = 256       # documents in the calibration text shipped beside the weights


def calibration_text(seed: int) -> str:
    """Training-split examples, as the model sees them when answering (plain and feedback), one per
    document: what `hardwire freeze` calibrates activation scales on by default."""
    from hardwire.model.text import DOCUMENT_SEPARATOR

    rng = random.Random(seed + 1)
    streams = {name: problems(name, seed + 1, held_out=False) for name in TASK_MIX}
    texts = []
    for _ in range(CALIBRATION_EXAMPLES):
        ids, _ = training_example(streams, rng, with_feedback=rng.random() < FEEDBACK_SHARE)
        texts.append(build_tokenizer().decode(ids[1:-1]))
    return f"\n{DOCUMENT_SEPARATOR}\n".join(texts) + "\n"


def export(model, folder: Path, record: dict) -> None:
    """config.json + model.safetensors (transformers' own writer) + tokenizer files + record."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for extra in ("generation_config.json",):
        (folder / extra).unlink(missing_ok=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
         "add_bos_token": True}, indent=1) + "\n")
    (folder / "calibration.txt").write_text(calibration_text(record["seed"]))
    (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n")


EVALUATION_COUNT = 500           # held-out problems per task set for the recorded accuracy
SAMPLE_COUNT = 50                # the first of them, re-checked through hardwire by `make test`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bundled task models on CPU.")
    parser.add_argument("--models", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder to write NAME/ folders into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--steps", type=int, default=None, help="override every recipe's step count")
    # One thread by default: the committed models were trained so, and a single-threaded CPU run adds
    # its floats in one order, so a retrain on the same torch build comes back the same.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for name in args.models:
        recipe = RECIPES[name]
        if args.steps is not None:
            recipe = Recipe(**{**asdict(recipe), "steps": args.steps})
        print(f"{name}: {recipe}", flush=True)
        model, history, seconds = train(recipe, args.seed, log=lambda line: print(line, flush=True))
        correct = {task: greedy_correct(model, task, EVALUATION_COUNT) for task in TASK_MIX}
        accuracy = {task: sum(c) / len(c) for task, c in correct.items()}
        parameters = sum(p.numel() for p in model.parameters())
        record = {"name": name, "parameters": parameters, "recipe": asdict(recipe), "seed": args.seed,
                  "data": {"tasks": list(TASK_MIX), "feedback_share": FEEDBACK_SHARE, "split": "training",
                           "max_context": MAX_CONTEXT},
                  "train_seconds": round(seconds, 1), "threads": args.threads,
                  "final_loss": sum(history[-250:]) / len(history[-250:]),
                  "held_out_greedy_accuracy": {"count": EVALUATION_COUNT, **accuracy},
                  "sample_check": {"count": SAMPLE_COUNT,
                                   "greedy_correct": {t: sum(c[:SAMPLE_COUNT]) for t, c in correct.items()}},
                  "torch": torch.__version__}
        export(model, args.out / name, record)
        print(f"{name}: {parameters:,} parameters, {seconds:.0f} s, held-out greedy accuracy "
              + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

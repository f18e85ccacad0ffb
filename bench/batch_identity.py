"""32 users decoded together give each user the tokens it gets decoded alone (issue 21's
"token-identical to 32 separate decodes"), on the 110M shape of bench/decode_golden.py.

    python bench/batch_identity.py [--plans w4g32 w8] [--users 32] [--steps 4]

Each user starts from its own random token; `GoldenTransformer.step_batch` decodes them together
(AMX tile products where the CPU has them, from `hardwire.golden.amx.MIN_USERS` users), then
`step` decodes each alone, greedily. Exits 1 if any user's tokens differ.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", nargs="+", default=["w4g32", "w8"])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    from decode_golden import golden_engine, random_model
    from hardwire.golden import amx
    from hardwire.model.reference import KVCache
    print(f"AMX tile products {'from ' + str(amx.MIN_USERS) + ' users' if amx.AMX else 'not available'}")
    model = random_model()
    rng = np.random.default_rng(3)
    differing = 0
    with tempfile.TemporaryDirectory() as tmp:
        for plan in args.plans:
            transformer = golden_engine(model, plan, Path(tmp)).transformer
            firsts = [int(t) for t in rng.integers(3, model.spec.vocab_size, args.users)]
            caches, tokens = [KVCache() for _ in firsts], list(firsts)
            together = [[] for _ in firsts]
            for _ in range(args.steps):
                tokens = [int(np.argmax(row)) for row in transformer.step_batch(tokens, caches)]
                for user, token in enumerate(tokens):
                    together[user].append(token)
            same = 0
            for user, token in enumerate(firsts):
                transformer.reset()
                alone = []
                for _ in range(args.steps):
                    token = int(np.argmax(transformer.step(token)))
                    alone.append(token)
                same += alone == together[user]
            differing += args.users - same
            print(f"{plan}: {same}/{args.users} users token-identical over {args.steps} steps", flush=True)
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()

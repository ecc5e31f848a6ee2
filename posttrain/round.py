"""Post-training rounds, Llama 3 style: the user's entry point (the loop itself: posttrain/pipeline.py).

    accelerate launch posttrain/round.py --recipe recipes/tiny.yaml [sft.learning_rate=2e-5 ...]

is `posttrain round --recipe recipes/tiny.yaml [...]`: every stage writes `runs/<name>/round_<r>/<stage>/`
atomically; rerunning the same command resumes at the first incomplete stage, and a changed recipe section
reruns that stage and everything after it. Nothing imports this script.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # vLLM's engine is started with `spawn`: this guard keeps children from rerunning it
    if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run as a script: keep posttrain/*.py from shadowing top-level modules (eval, ...)
    from posttrain.cli import main

    raise SystemExit(main(["round", *sys.argv[1:]]))

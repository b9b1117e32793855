"""Generate from a checkpoint with vLLM's offline engine (run in .venv-eval).

Prints one JSON line: {"outputs": [{"text", "token_ids"}...], "vocab_size"}.
Used by tests that need proof a checkpoint loads and generates in vLLM.
"""

import argparse
import json

from PIL import Image, ImageDraw


def images(n: int) -> list:
    out = []
    for i in range(n):
        img = Image.new("RGB", (112, 84 + 28 * i), "white")
        ImageDraw.Draw(img).rectangle([10 * i, 10, 10 * i + 30, 40], fill="red")
        out.append(img)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=2048)  # InternVL's tiles need more
    parser.add_argument("--mm-processor-kwargs", type=json.loads, default=None, help="JSON, passed to LLM")
    args = parser.parse_args()

    import os

    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    from eval.backends.vllm_backend import cpu_build_installed, one_process_on_cpu

    one_process_on_cpu(os.environ, cpu_build_installed())  # as eval's backend runs it (about 40 s less here)
    processor = AutoProcessor.from_pretrained(args.model)
    content = [{"type": "image"}] * args.images + [{"type": "text", "text": "Where is the red square?"}]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    llm = LLM(
        model=args.model,
        enforce_eager=True,
        max_model_len=args.max_model_len,
        limit_mm_per_prompt={"image": args.images},
        mm_processor_kwargs=args.mm_processor_kwargs,
        seed=0,
    )
    try:
        requests = [{"prompt": prompt, "multi_modal_data": {"image": images(args.images)}}] * args.prompts
        params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
        outs = llm.generate(requests, params)
        result = {
            "outputs": [{"text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids)} for o in outs],
            "prompt_tokens": [len(o.prompt_token_ids) for o in outs],
            "vocab_size": llm.llm_engine.model_config.get_vocab_size(),
        }
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        # Shut the engine down here, as eval's vLLM backend does: left to interpreter exit, multiprocessing's
        # atexit join of the engine process can run before vLLM's own teardown and wait forever (seen here).
        engine = llm.llm_engine
        shutdown = getattr(engine, "shutdown", None) or getattr(
            getattr(engine, "engine_core", None), "shutdown", None
        )
        if callable(shutdown):
            shutdown()


if __name__ == "__main__":
    main()

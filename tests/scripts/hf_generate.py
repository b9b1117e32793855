"""Load a checkpoint with transformers' Auto classes and generate greedily (runs in either environment).

Prints one line `RESULT {json}`: the transformers version, the model class, the image grids (Qwen
processors; None for InternVL's tiles), the pixel tensor's shape, the prompt length, the new token ids
and the weights transformers reported missing or unexpected (a renamed key would load as random
weights without failing, so callers check both lists are empty).
"""

import argparse
import json

from PIL import Image, ImageDraw


def images(n: int) -> list:
    out = []
    for i in range(n):
        img = Image.new("RGB", (150 + 40 * i, 100 + 30 * i), "white")
        ImageDraw.Draw(img).rectangle([10 * i, 10, 10 * i + 40, 50], fill="red")
        out.append(img)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(args.model)
    model, info = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    content = [{"type": "image"}] * args.images + [{"type": "text", "text": "Where is the red square?"}]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=[prompt], images=images(args.images), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    result = {
        "transformers": transformers.__version__,
        "model_class": type(model).__name__,
        "image_grid_thw": inputs["image_grid_thw"].tolist() if "image_grid_thw" in inputs else None,
        "pixel_values_shape": list(inputs["pixel_values"].shape),
        "prompt_tokens": inputs["input_ids"].shape[1],
        "new_token_ids": out[0, inputs["input_ids"].shape[1] :].tolist(),
        "vocab_size": model.config.text_config.vocab_size,
        "missing_keys": sorted(info.get("missing_keys", [])),
        "unexpected_keys": sorted(info.get("unexpected_keys", [])),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

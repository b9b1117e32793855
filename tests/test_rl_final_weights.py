"""`rl train`'s final weights (rl/final_weights.py) with transformers' own Trainer on a tiny model.

Why a plain Trainer: the callback only reads transformers' save events, so a 3-step run of a tiny
causal LM (seconds, in .venv) shows both ways: training that ends on a save leaves output_dir's
weights as hard links to that checkpoint (nothing written twice) and resumes from it; training that
does not save at the end is saved once by save_model, without writing through an earlier link.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.train

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rl.final_weights import FinalWeights  # noqa: E402


def _trainer(out, max_steps: int, save_strategy: str, callback: FinalWeights):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    model = transformers.LlamaForCausalLM(config)
    rows = [{"input_ids": [i, i + 1, i + 2], "labels": [i, i + 1, i + 2]} for i in range(8)]
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_strategy=save_strategy,
        save_steps=2,
        per_device_train_batch_size=1,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])


def test_a_run_ending_on_a_save_links_that_checkpoint_and_resumes_from_it(tmp_path):
    out = tmp_path / "run"
    final = FinalWeights(None)
    trainer = _trainer(out, 3, "steps", final)
    trainer.train()
    assert final.publish(trainer, str(out)) == str(out / "checkpoint-3")
    assert os.path.samefile(out / "model.safetensors", out / "checkpoint-3" / "model.safetensors")
    assert os.path.samefile(out / "config.json", out / "checkpoint-3" / "config.json")
    assert not (out / "optimizer.pt").exists()

    resumed = FinalWeights(str(out / "checkpoint-3"))  # a larger max_steps continues from it
    trainer = _trainer(out, 5, "steps", resumed)
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-3"))
    assert trainer.state.global_step == 5
    assert resumed.publish(trainer, str(out)) == str(out / "checkpoint-5")
    assert os.path.samefile(out / "model.safetensors", out / "checkpoint-5" / "model.safetensors")
    assert not os.path.samefile(out / "checkpoint-3" / "model.safetensors", out / "model.safetensors")

    again = FinalWeights(str(out / "checkpoint-5"))  # a finished run resumed: still one final save, linked
    trainer = _trainer(out, 5, "steps", again)
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-5"))
    last = out / f"checkpoint-{trainer.state.global_step}"
    assert again.publish(trainer, str(out)) == str(last)
    assert os.path.samefile(out / "model.safetensors", last / "model.safetensors")


def test_a_run_without_a_final_save_is_saved_once_without_writing_through_a_link(tmp_path):
    out = tmp_path / "run"
    trainer = _trainer(out, 2, "steps", FinalWeights(None))
    trainer.train()
    os.link(out / "checkpoint-2" / "model.safetensors", out / "model.safetensors")
    linked = (out / "checkpoint-2" / "model.safetensors").read_bytes()

    final = FinalWeights(None)
    trainer = _trainer(out, 1, "no", final)
    trainer.train()
    assert final.publish(trainer, str(out)) is None
    assert (out / "model.safetensors").stat().st_nlink == 1
    assert (out / "checkpoint-2" / "model.safetensors").read_bytes() == linked
    assert (out / "model.safetensors").read_bytes() != linked

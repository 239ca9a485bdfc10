"""CPU smoke test of recipes/train_qwen2_5_vl_lora.py: 2 optimizer steps of a tiny, randomly initialised
Qwen2.5-VL-shaped model with a tokenizer built here (no downloads), on a real export-sft output."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
from test_export_sft import corpus

from v60k.roleplay.sft_export import export_sft

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "train_qwen2_5_vl_lora.py"
SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def load_recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_qwen2_5_vl_lora", RECIPE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny_model(directory: Path, words: list[str]) -> None:
    """A 2-layer Qwen2.5-VL (text 64 wide, vision 1 block) and a word-level tokenizer, saved like a Hub model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {token: i for i, token in enumerate([*SPECIAL, "[UNK]", *sorted(set(words))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
        additional_special_tokens=SPECIAL[1:],
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL}
    head_dim = 64 // 4
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            # mrope_section must sum to head_dim / 2
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, head_dim // 2 - 5]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2).save_pretrained(directory)


def test_two_lora_steps_on_cpu_give_a_finite_loss_and_an_adapter(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    data = tmp_path / "sft"
    summary = export_sft(corpus(tmp_path / "corpus"), data)
    assert summary.splits["train"].with_frames == 2
    words = " ".join((data / "trl" / "train.jsonl").read_text().replace('"', " ").split()).split()
    model_dir = tmp_path / "tiny-qwen2_5_vl"
    build_tiny_model(model_dir, words + ["system", "user", "assistant"])
    out = tmp_path / "run"
    recipe = load_recipe()
    # the collated batch carries the clip's frames, in the export's order, as image tokens
    trainer = recipe.build_trainer(recipe.parse_args([
        "--data", str(data), "--model", str(model_dir), "--output-dir", str(out), "--cpu", "--eval-split", "",
        "--min-pixels", str(28 * 28), "--max-pixels", str(56 * 56),
    ]))  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["image_grid_thw"].shape[0] == 3 and batch["pixel_values"].shape[0] > 0
    image_token = trainer.processing_class.image_token_id
    tokens_per_image = (batch["image_grid_thw"].prod(dim=1) // 4).tolist()
    assert int((batch["input_ids"] == image_token).sum()) == sum(tokens_per_image)
    assert int((batch["labels"] != -100).sum()) > 0 and bool(
        (batch["labels"][batch["input_ids"] == image_token] == -100).all()
    )
    del trainer
    result = recipe.main([
        "--data", str(data), "--model", str(model_dir), "--output-dir", str(out), "--cpu", "--max-steps", "2",
        "--batch-size", "1", "--grad-accum", "1", "--min-pixels", str(28 * 28), "--max-pixels", str(56 * 56),
        "--save-steps", "1", "--save-total-limit", "2", "--eval-split", "", "--no-gradient-checkpointing",
    ])  # fmt: skip
    assert result["global_step"] == 2
    assert len(result["losses"]) == 2 and all(math.isfinite(loss) and loss > 0 for loss in result["losses"])
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 16
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert recipe.latest_checkpoint(out).endswith("checkpoint-2")
    # resume: the run continues from checkpoint-2 to step 3
    resumed = recipe.main([
        "--data", str(data), "--model", str(model_dir), "--output-dir", str(out), "--cpu", "--max-steps", "3",
        "--batch-size", "1", "--grad-accum", "1", "--min-pixels", str(28 * 28), "--max-pixels", str(56 * 56),
        "--save-steps", "1", "--eval-split", "", "--no-gradient-checkpointing", "--resume", "auto",
    ])  # fmt: skip
    assert resumed["global_step"] == 3 and resumed["resumed_from"].endswith("checkpoint-2")
    assert len(resumed["losses"]) >= 1 and math.isfinite(resumed["losses"][-1])


def test_training_template_masks_all_but_the_character_lines(tmp_path: Path) -> None:
    """The assistant mask covers exactly the assistant replies (and their end-of-turn token)."""
    pytest.importorskip("transformers")
    recipe = load_recipe()
    words = ["you", "are", "ross", "hi", "monica", "we", "were", "on", "a", "break", "fine"]
    model_dir = tmp_path / "tiny"
    build_tiny_model(model_dir, [*words, "system", "user", "assistant"])
    processor = recipe.load_processor(str(model_dir), 28 * 28, 56 * 56)
    processor.chat_template = recipe.TRAINING_CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "you are ross"}]},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "we were on a break"}]},
        {"role": "user", "content": [{"type": "text", "text": "monica"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "fine"}]},
    ]
    out = processor.apply_chat_template(
        [messages], tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    tokens = processor.tokenizer.convert_ids_to_tokens(out["input_ids"][0].tolist())
    trained = [t for t, m in zip(tokens, out["assistant_masks"][0].tolist(), strict=True) if m]
    assert trained == ["we", "were", "on", "a", "break", "<|im_end|>", "fine", "<|im_end|>"]

"""LoRA fine-tuning of Qwen2.5-VL-7B-Instruct on the role-play SFT export (TRL SFTTrainer + PEFT).

Reads ``v60k export-sft``'s TRL files (``<data>/trl/<split>.jsonl``; image paths relative to ``<data>``) and trains
on the character's lines only (assistant-only loss through a chat template with generation markers).
Hyperparameters, GPU memory and resuming: recipes/README.md.

    python recipes/train_qwen2_5_vl_lora.py --data sft --output-dir runs/qwen2_5_vl_lora
    python recipes/train_qwen2_5_vl_lora.py --data sft --output-dir runs/qwen2_5_vl_lora --resume auto
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Qwen2.5-VL's chat template with {% generation %} markers around each assistant reply (and its <|im_end|>),
# so that only the character's lines are trained on; otherwise token-for-token the model's own template.
TRAINING_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if 'text' in content and content['text'] is not none %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>{% endgeneration %}\n"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content and content['text'] is not none %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="export-sft output directory (holds trl/<split>.jsonl)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument(
        "--eval-split", default="validation", help="evaluated each --eval-steps when present; '' = none"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or local directory")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=1, help="per device")
    parser.add_argument("--grad-accum", type=int, default=16)
    parser.add_argument("--warmup-ratio", type=float, default=0.03)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument(
        "--min-pixels", type=int, default=128 * 28 * 28, help="per frame, Qwen2.5-VL image processor"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=256 * 28 * 28, help="per frame: 256 visual tokens at most"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="keep at most N frames per conversation")
    parser.add_argument("--save-steps", type=int, default=200)
    parser.add_argument("--eval-steps", type=int, default=200)
    parser.add_argument("--save-total-limit", type=int, default=3)
    parser.add_argument(
        "--resume", default=None, help="'auto' (latest checkpoint in --output-dir) or a checkpoint dir"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="train on CPU in float32 (the smoke test)")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    return parser.parse_args(argv)


def read_split(data: Path, split: str, max_frames: int | None = None) -> list[dict[str, Any]]:
    """The TRL export's rows with absolute image paths (at most ``max_frames`` per row, evenly in time)."""
    path = data / "trl" / f"{split}.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `v60k export-sft --shards CORPUS --out {data}` first")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        images = [str(data / p) for p in row.get("images") or []]
        if max_frames is not None and len(images) > max_frames:
            keep = sorted({int(i * len(images) / max_frames) for i in range(max_frames)})
            images = [images[i] for i in keep]
            row["messages"] = _keep_image_parts(row["messages"], set(keep))
        rows.append({"messages": row["messages"], "images": images})
    return rows


def _keep_image_parts(messages: list[dict[str, Any]], keep: set[int]) -> list[dict[str, Any]]:
    """The messages with the image parts whose index is in ``keep``; the frame label (the text part right
    before an image) goes with its image."""
    index = 0
    for message in messages:
        if isinstance(message["content"], list):
            parts: list[dict[str, Any]] = []
            for part in message["content"]:
                if part.get("type") == "image":
                    if index not in keep:
                        if parts and parts[-1].get("type") == "text" and str(parts[-1].get("text", "")).startswith("Frame "):
                            parts.pop()
                        index += 1
                        continue
                    index += 1
                parts.append(part)
            message["content"] = parts
    return messages


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` whose ``images`` decode to PIL on access; content parts keep a uniform schema."""
    from datasets import Dataset, Image, Sequence

    for row in rows:
        for message in row["messages"]:
            if isinstance(message["content"], list):
                message["content"] = [{"type": p["type"], "text": p.get("text")} for p in message["content"]]
    return Dataset.from_list(rows).cast_column("images", Sequence(Image()))


def load_processor(model: str, min_pixels: int, max_pixels: int) -> Any:
    """The model's processor; without torchvision (no video processor) an image-only one built from its parts."""
    from transformers import AutoProcessor, AutoTokenizer, Qwen2_5_VLProcessor

    try:
        processor = AutoProcessor.from_pretrained(model, min_pixels=min_pixels, max_pixels=max_pixels)
        if getattr(processor, "image_processor", None) is not None:
            return processor
        failure: Exception = TypeError(
            f"AutoProcessor gave a {type(processor).__name__} without image processor"
        )
    except (ImportError, ValueError, TypeError, AttributeError) as exc:  # no torchvision: no video processor
        failure = exc
    print(f"AutoProcessor unavailable ({type(failure).__name__}: {failure}); using the image-only processor")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor without the video processor (which needs torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: ANN001
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    tokenizer = AutoTokenizer.from_pretrained(model)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(
        model, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=getattr(tokenizer, "chat_template", None),
    )


def latest_checkpoint(output_dir: Path) -> str | None:
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


def build_trainer(args: argparse.Namespace) -> Any:
    import torch
    from peft import LoraConfig
    from transformers import Qwen2_5_VLForConditionalGeneration
    from trl import SFTConfig, SFTTrainer

    data = Path(args.data)
    train = to_dataset(read_split(data, args.train_split, args.max_frames))
    eval_rows = []
    if args.eval_split and (data / "trl" / f"{args.eval_split}.jsonl").is_file():
        eval_rows = read_split(data, args.eval_split, args.max_frames)
    evaluation = to_dataset(eval_rows) if eval_rows else None

    processor = load_processor(args.model, args.min_pixels, args.max_pixels)
    processor.chat_template = TRAINING_CHAT_TEMPLATE
    dtype = torch.float32 if args.cpu else torch.bfloat16
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=dtype)
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=r".*language_model.*\.(" + "|".join(LORA_TARGETS) + ")$",
        task_type="CAUSAL_LM",
    )
    steps_per_epoch = max(1, math.ceil(len(train) / (args.batch_size * args.grad_accum)))
    config = SFTConfig(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(
            args.warmup_ratio * (args.max_steps if args.max_steps > 0 else steps_per_epoch * args.epochs)
        ),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        activation_checkpointing=not args.no_gradient_checkpointing,
        bf16=not args.cpu,
        use_cpu=args.cpu,
        max_length=None,  # never cut: the image tokens sit at the start of the first user turn
        assistant_only_loss=True,  # the character's lines only
        eval_strategy="steps" if evaluation is not None else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=1 if args.cpu else 10,
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0 if args.cpu else 4,
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=lora,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    trainer = build_trainer(args)
    resume = latest_checkpoint(Path(args.output_dir)) if args.resume == "auto" else args.resume
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)  # the LoRA adapter (adapter_config.json, adapter_model.safetensors)
    trainer.processing_class.save_pretrained(args.output_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "losses": losses,
        "resumed_from": resume,
        "output_dir": args.output_dir,
    }
    (Path(args.output_dir) / "train_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

"""`vlm-opd build-tiny`: build a tiny random model of a real family, offline (for smoke tests and docs)."""

from __future__ import annotations

import argparse

# vlm_opd.models.real_width.REAL_PRESETS (not imported here: command modules stay free of torch at
# parser-build time; a test checks the two lists agree).
PRESETS = ("qwen2_5_vl_3b", "qwen3_vl_2b", "qwen3_vl_8b")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-tiny", help="build a tiny (or real-width, --preset) random Qwen-VL model offline",
                       description="Build a tiny random model of a real family with a locally trained tokenizer, "
                                   "a chat template and a processor, and save it as a normal model directory. "
                                   "Models built with the same --seed share one tokenizer, so they can teach each other. "
                                   "--preset builds the real architecture of Qwen2.5-VL-3B / Qwen3-VL-2B / "
                                   "Qwen3-VL-8B with random weights and the depth cut to --layers.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--family", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3"],
                     help="tiny model of this family (qwen3 = text-only LM, e.g. a VOLD teacher)")
    src.add_argument("--preset", choices=PRESETS,
                     help="real-width model: the real config of this checkpoint (vocab 151,936, real hidden "
                          "sizes, heads, rope, vision tower, image processor), depth cut to --layers")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--text-hidden", type=int, default=64, help="language model hidden size")
    p.add_argument("--text-layers", type=int, default=2, help="language model layers")
    p.add_argument("--vision-embed", type=int, default=32, help="vision encoder width")
    p.add_argument("--vision-depth", type=int, default=2, help="vision encoder blocks")
    p.add_argument("--vocab-size", type=int, default=1024, help="tokenizer vocabulary budget")
    p.add_argument("--seed", type=int, default=0, help="seed of the tokenizer corpus and the weights")
    p.add_argument("--layers", type=int, default=1,
                   help="--preset only: text blocks to keep (0 = the real depth)")
    p.add_argument("--vision-layers", type=int, default=None,
                   help="--preset only: vision blocks to keep (default: same as --layers; 0 = the real depth)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="--preset only: weight dtype (a full-depth 8B is 35 GB in float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlm_opd.models import build_tiny

    if args.preset:
        from vlm_opd.models.real_width import build_real_width

        vision = args.layers if args.vision_layers is None else args.vision_layers
        lm = build_real_width(args.preset, args.out, text_layers=args.layers or None, vision_layers=vision or None,
                              seed=args.seed, tokenizer_seed=args.seed, dtype=args.dtype)
        n = sum(p.numel() for p in lm.model.parameters())
        print(f"built real-width {args.preset} ({n / 1e6:.1f}M parameters, vocab {lm.vocab_size}, "
              f"hidden {lm.hidden_size}) in {args.out}")
        return 0

    lm = build_tiny(args.family, args.out, vocab_size=args.vocab_size, text_hidden=args.text_hidden,
                    text_layers=args.text_layers, vision_embed=args.vision_embed, vision_depth=args.vision_depth,
                    seed=args.seed)
    n = sum(p.numel() for p in lm.model.parameters())
    print(f"built {args.family} ({n / 1e6:.2f}M parameters) in {args.out}")
    return 0

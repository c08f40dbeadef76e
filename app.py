"""Gradio app for text-driven face editing (StyleCLIP methods over StyleGAN2 + e4e).

The full UI lands with the app issue; until then this serves a minimal page so that
`python app.py` starts and the Space builds.
"""

from __future__ import annotations

import argparse


def build_demo():
    import gradio as gr

    with gr.Blocks(title="Text-driven face editing") as demo:
        gr.Markdown("# Text-driven face editing\nThe editing UI is under construction.")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true")
    args = parser.parse_args(argv)
    build_demo().queue(max_size=16).launch(server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()

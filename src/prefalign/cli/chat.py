"""`prefalign chat`: talk to a model or a trained run in the terminal, replies streamed."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
A multi-turn chat with MODEL_OR_RUN (the alias smollm2-135m-instruct, a .gguf file, a model
directory, or a run directory, whose final/ model is used) through the model's own chat
template. Each reply is printed as its tokens are sampled and ends at the template's
end-of-turn token or at --max-new-tokens.

commands:
  /system TEXT   use TEXT as the system message from the next turn on
  /system        go back to the chat template's default system message
  /reset         forget the conversation (the system message stays)
  /quit          leave (so do Ctrl-D and /exit); Ctrl-C stops a reply being written
"""

EPILOG = """\
examples:
  prefalign chat smollm2-135m-instruct
  prefalign chat runs/demo --system "You are a terse assistant." --temperature 0.7 --top-p 0.9
  prefalign chat runs/demo --greedy

exit codes: 0 done; 2 bad option or a model that cannot be loaded.
"""

PROMPT = "you> "
REPLY = "model> "


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("chat", help="chat with a model or a run in the terminal",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL_OR_RUN", help="model source or run directory")
    p.add_argument("--system", default=None, metavar="TEXT", help="system message")
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely (0: all)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus cut (1: none)")
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="default: the run's dtype, float32 for a model source")
    p.set_defaults(handler=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from prefalign.engine.models.resolve import load_model_or_run
    from prefalign.engine.sampling import DecodeSettings
    from prefalign.engine.sampling.chat import ChatSession

    settings = DecodeSettings(do_sample=not args.greedy, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p,
                              max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=1)
    resolved = load_model_or_run(args.model, args.dtype)
    session = ChatSession(resolved.model, resolved.tokenizer, settings, system=args.system)
    print(f"chatting with {resolved.description['source']}; /system TEXT, /reset, /quit")
    while True:
        try:
            line = input(PROMPT)
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not handle_line(session, line.strip()):
            return 0


def handle_line(session, line: str) -> bool:
    """Act on one input line; False when the chat should end."""
    if not line:
        return True
    if line.startswith("/"):
        return command(session, line)
    sys.stdout.write(REPLY)
    sys.stdout.flush()
    try:
        session.reply(line, on_text=_write)
    except KeyboardInterrupt:
        print("\n[reply stopped; it is not kept in the conversation]")
        return True
    print()
    return True


def command(session, line: str) -> bool:
    name, _, rest = line.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/reset":
        session.reset()
        print("[conversation cleared]")
    elif name == "/system":
        session.system = rest.strip() or None
        print(f"[system message: {session.system}]" if session.system
              else "[system message: the chat template's default]")
    else:
        print(f"[unknown command {name}; commands: /system TEXT, /reset, /quit]")
    return True


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()

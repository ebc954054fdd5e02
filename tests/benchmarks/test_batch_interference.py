"""The interference benchmark's pure pieces: batch lines the Batches API accepts, the report row.
(The measurement itself is a real ``grokd serve`` run: ``python -m grokd.benchmarks.batch_interference``.)"""

from __future__ import annotations

import json

from grokd.benchmarks.batch_interference import batch_jsonl, markdown_row


def test_batch_lines_are_chat_requests_with_unique_ids() -> None:
    rows = [json.loads(line) for line in batch_jsonl("m", 5, 16).decode().splitlines()]
    assert len(rows) == 5 and len({r["custom_id"] for r in rows}) == 5
    assert all(r["method"] == "POST" and r["url"] == "/v1/chat/completions" for r in rows)
    assert all(r["body"]["model"] == "m" and r["body"]["max_tokens"] == 16 for r in rows)


def test_markdown_row() -> None:
    result = {"idle_ttft_ms": {"p50": 60.2, "p90": 81.0}, "busy_ttft_ms": {"p50": 111.0, "p90": 132.4},
              "ratio_p50": 1.84, "ratio_p90": 1.63, "meets_target": True,
              "batch": {"lines": 1000, "max_tokens": 16}, "machine": {"loadavg": [0.5, 1.0, 2.0]}}
    assert markdown_row(result) == ("| batch interference (1000×16 tok) | 60 / 81 | 111 / 132 | 1.84× / 1.63× "
                                    "| yes | 0.50, 1.00, 2.00 |")

"""Data-plane codec throughput: decoded and encoded ``transactionNotification`` frames per second.

Compares the project's :func:`decode_rpc` / :func:`encode_rpc` with the stdlib ``json``
module and with raw ``orjson`` on one realistic frame (``getTransaction`` shape, about
2 KB). Plain script: ``python benchmarks/bench_codec.py [seconds-per-row]``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from trio_backtest.protocol import decode_rpc, encode_rpc

PROGRAM = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
SIGNATURE = (
    "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"
)
KEYS = [
    "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
    "9wFFyRfZBsuAha4YcuxcXLKwMxJR43S7fPfQLusDBzvT",
    "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
    "So11111111111111111111111111111111111111112",
    "8szGkuLTAux9XMgZ2vtY39jVSowEcpBfFfD8hXSEqdGC",
    "11111111111111111111111111111111",
    "ComputeBudget111111111111111111111111111111",
    TOKEN_PROGRAM,
    PROGRAM,
]


def token_balance(index: int, amount: str, decimals: int) -> dict[str, Any]:
    """A token balance entry of ``meta``."""
    return {
        "accountIndex": index,
        "mint": KEYS[2],
        "owner": KEYS[0],
        "programId": TOKEN_PROGRAM,
        "uiTokenAmount": {
            "amount": amount,
            "decimals": decimals,
            "uiAmount": int(amount) / 10**decimals,
            "uiAmountString": str(int(amount) / 10**decimals),
        },
    }


def transaction_notification() -> dict[str, Any]:
    """One notification as the data plane sends it."""
    return {
        "jsonrpc": "2.0",
        "method": "transactionNotification",
        "params": {
            "subscription": 3,
            "result": {
                "slot": 300_000_012,
                "blockTime": 1_731_000_123,
                "version": 0,
                "transaction": {
                    "signatures": [SIGNATURE],
                    "message": {
                        "header": {
                            "numRequiredSignatures": 1,
                            "numReadonlySignedAccounts": 0,
                            "numReadonlyUnsignedAccounts": 4,
                        },
                        "accountKeys": KEYS,
                        "recentBlockhash": "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N",
                        "instructions": [
                            {"programIdIndex": 6, "accounts": [], "data": "3DdGGhkhJbjm"},
                            {"programIdIndex": 6, "accounts": [], "data": "Fj2Eoy"},
                            {
                                "programIdIndex": 8,
                                "accounts": [0, 1, 4, 2, 3, 7],
                                "data": "PrpFmsY4d26dKbdKMAXs4nW5dc5wDPKaNyAAdUhYR1N",
                            },
                        ],
                        "addressTableLookups": [],
                    },
                },
                "meta": {
                    "err": None,
                    "status": {"Ok": None},
                    "fee": 5_000,
                    "preBalances": [
                        1_000_000_000,
                        2_039_280,
                        1_461_600,
                        0,
                        2_039_280,
                        1,
                        1,
                        934_087_680,
                        1_141_440,
                    ],
                    "postBalances": [
                        999_995_000,
                        2_039_280,
                        1_461_600,
                        0,
                        2_039_280,
                        1,
                        1,
                        934_087_680,
                        1_141_440,
                    ],
                    "innerInstructions": [
                        {
                            "index": 2,
                            "instructions": [
                                {
                                    "programIdIndex": 7,
                                    "accounts": [1, 4, 0],
                                    "data": "3Dc8EpW7Kr3R",
                                    "stackHeight": 2,
                                },
                            ],
                        }
                    ],
                    "logMessages": [
                        "Program ComputeBudget111111111111111111111111111111 invoke [1]",
                        "Program ComputeBudget111111111111111111111111111111 success",
                        f"Program {PROGRAM} invoke [1]",
                        "Program log: Instruction: Route",
                        f"Program {TOKEN_PROGRAM} invoke [2]",
                        "Program log: Instruction: Transfer",
                        f"Program {TOKEN_PROGRAM} consumed 4645 of 182350 compute units",
                        f"Program {TOKEN_PROGRAM} success",
                        f"Program {PROGRAM} consumed 41234 of 200000 compute units",
                        f"Program {PROGRAM} success",
                    ],
                    "preTokenBalances": [token_balance(1, "25000000", 6)],
                    "postTokenBalances": [token_balance(1, "15000000", 6)],
                    "rewards": [],
                    "computeUnitsConsumed": 46_029,
                },
            },
        },
    }


def rate(operation: Callable[[], object], seconds: float, repeats: int = 3) -> float:
    """Calls per second of ``operation``: the best of ``repeats`` runs of ``seconds`` each.

    The best run is the one least disturbed by other work on a shared machine.
    """
    best = 0.0
    for _ in range(repeats):
        batch, calls, elapsed = 64, 0, 0.0
        start = time.perf_counter()
        while elapsed < seconds:
            for _ in range(batch):
                operation()
            calls += batch
            elapsed = time.perf_counter() - start
        best = max(best, calls / elapsed)
    return best


def main(argv: list[str]) -> None:
    seconds = float(argv[1]) if len(argv) > 1 else 0.15
    message = transaction_notification()
    text = orjson.dumps(message).decode()
    data = text.encode()
    model = decode_rpc(text)
    assert orjson.loads(encode_rpc(model)) == message
    assert json.loads(text) == message

    rows = [
        ("decode", "json.loads (stdlib)", lambda: json.loads(text)),
        ("decode", "orjson.loads (raw, reference)", lambda: orjson.loads(data)),
        ("decode", "decode_rpc (str)", lambda: decode_rpc(text)),
        ("decode", "decode_rpc (bytes)", lambda: decode_rpc(data)),
        ("encode", "json.dumps (stdlib)", lambda: json.dumps(message)),
        ("encode", "orjson.dumps (raw, reference)", lambda: orjson.dumps(message)),
        ("encode", "encode_rpc", lambda: encode_rpc(model)),
    ]
    print(f"transactionNotification frame: {len(data)} bytes; best of 3 runs of {seconds:.2f} s")
    print(f"{'':6}  {'codec':32}  {'msgs/s':>10}  {'us/msg':>7}  {'MB/s':>7}")
    for kind, name, operation in rows:
        per_second = rate(operation, seconds)
        print(
            f"{kind:6}  {name:32}  {per_second:10,.0f}  {1e6 / per_second:7.2f}"
            f"  {per_second * len(data) / 1e6:7.1f}"
        )


if __name__ == "__main__":
    main(sys.argv)

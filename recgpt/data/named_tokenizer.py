"""A named tokenizer for ``recgpt data prepare``, loaded by ``AutoTokenizer`` in a child process.

Importing transformers costs a process about 0.6 GB (it brings torch, scipy and scikit-learn) and seconds of CPU,
and the writers need only what it loads: the Rust tokenizer as transformers builds it (post-processor included),
the EOS id and the vocabulary size. So ``start`` runs ``python -m recgpt.data.named_tokenizer`` before ingest, its
load overlapping the engine's work, and the parent and its writing workers tokenize with ``RustTokenizer`` over the
JSON it leaves. A tokenizer without a Rust backend (a slow one) is loaded in the parent as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from recgpt.data.writing import die_with_parent

RESULT = "tokenizer.json"


@dataclass(frozen=True)
class LoadedTokenizer:
    """What the child loaded.

    Attributes:
        backend_json: ``backend_tokenizer.to_str()``, or None for a tokenizer without a Rust backend.
        eos_token_id: The EOS id (None when the tokenizer has none).
        size: ``len(tokenizer)``: the vocabulary with added tokens.
    """

    backend_json: str | None
    eos_token_id: int | None
    size: int


class TokenizerProcess:
    """The child loading ``name``; ``result()`` waits for it."""

    def __init__(self, name: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.name, self.folder = name, folder
        self._errors = (folder / "stderr.txt").open("wb")
        command = [sys.executable, "-m", "recgpt.data.named_tokenizer", name, str(folder), str(os.getpid())]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._errors)

    def result(self) -> LoadedTokenizer:
        """The loaded tokenizer's parts.

        Raises:
            ValueError: Naming ``tokenizer.name`` and the loader's last error line, when the child failed.
        """
        status = self._process.wait()
        self._errors.close()
        path = self.folder / RESULT
        if status != 0 or not path.is_file():
            lines = (self.folder / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            reason = lines[-1] if lines else f"the loader exited with status {status}"
            raise ValueError(
                f"tokenizer.name: {self.name}: could not be loaded ({reason}); give a tokenizer folder, or a hub id "
                "that is in the local cache (the run is offline when HF_HUB_OFFLINE=1)"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        return LoadedTokenizer(data["backend_json"], data["eos_token_id"], data["size"])

    def stop(self) -> None:
        """Kill the child if it still runs (a run that failed before it needed the tokenizer)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._errors.close()


def start(name: str, folder: Path) -> TokenizerProcess:
    """Start loading ``name`` in a child process that writes its result under ``folder``."""
    return TokenizerProcess(name, folder)


def _child_main(name: str, folder: Path, parent: int) -> int:
    die_with_parent(parent)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    data = {
        "backend_json": backend.to_str() if backend is not None else None,
        "eos_token_id": tokenizer.eos_token_id,
        "size": len(tokenizer),
    }
    partial = folder / f"{RESULT}.partial"
    partial.write_text(json.dumps(data), encoding="utf-8")
    partial.replace(folder / RESULT)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))

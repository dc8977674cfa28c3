"""Regenerate sample_instruction_following_dataset/ from recgpt's own invented catalogue.

Usage: python scripts/make_sample_dataset.py [OUTPUT_FOLDER]
"""

import sys
from pathlib import Path

from recgpt.data.sample import build_sample_dataset

if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "sample_instruction_following_dataset")
    rows = build_sample_dataset(folder)
    sys.stdout.write(f"wrote {rows} rows to {folder / 'train.jsonl'}\n")

"""Train from a recipe: ``composer --world_size N scripts/train.py configs/fine-tuning.yaml [key=value ...]``."""

from recgpt.training.launch import main

if __name__ == "__main__":
    main()

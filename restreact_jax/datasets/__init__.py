"""Evaluation datasets: Bamboogle and BamTwoogle (shipped copies with their
attribution and licence files under `data/`), their TFDS builders, and the
loader for user question files (JSONL or CSV)."""

"""Small helpers shared by every stage: threads, atomic file system operations, JSONL I/O."""

"""What the generate stage checks in what an LLM wrote: the quality gate's rules (``quality``) and near-duplicate
detection (``dedup``)."""

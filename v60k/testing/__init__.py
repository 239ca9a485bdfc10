"""Generated media and work dirs with known truths (cuts, speakers, lines, names) for the demo, tests and
benchmarks. Nothing here is used by the pipeline itself."""

"""lmms-eval 0.7.3 as a backend of the suite: wrapper tasks over its own multi-image benchmarks, and
MIG-Bench as an lmms-eval task scored by this project.

Why wrappers and not copies: MuirBench, BLINK and Mantis-Eval keep lmms-eval's own prompts, parsers
and scorers (the paper's Table 2 numbers come from them); a wrapper only points a built-in task at
local data (offline), renames it (built-in names win a collision) and fixes decoding to greedy.
"""

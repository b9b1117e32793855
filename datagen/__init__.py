"""Teacher-model data synthesis: Migician's free-form pipeline and MIRG-RL's trajectories.

Why: neither paper published the code that wrote its synthetic data, only the data. This package
runs both pipelines against any OpenAI-compatible server (vLLM, a hosted API), with a request cache
so a crashed or repeated run repeats no finished request, and writes outputs the existing
converters read (`python -m converters mgrounding`, the trajectory-SFT format).
"""

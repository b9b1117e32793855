"""GRPO stage (MIRG-RL / UniVG-R1): rewards, trainer entry point and their CLI.

Why a package of its own: the rewards are pure functions that eval, tests and the trainer share, while
training needs TRL, which cannot live in the LLaMA-Factory environment (see the README).
"""

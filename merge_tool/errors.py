"""The one exception merge_tool raises for refusals and bad input.

Why: the CLI turns it into a one-line message and exit code 1; anything else
is a bug and keeps its traceback.
"""


class MergeError(Exception):
    """A refusal or bad input, with a message naming the model, file or tensor."""

"""The pack's shared foundations, imported by every stage and importing none of them: atomic writes
(atomicio), the exit-code table and logging (cli), the bounded JSON, JSONL and YAML readers (jsonfile,
streaming, yamlfile), the grounding text rules and the one IoU (grounding), the stage table (stages) and
the one client for OpenAI-compatible servers (chatclient) and the boxes-on-images page writer (boxpage).

Why one package: these modules sat at the repository root and in converters/, so eval, rl and datagen
imported a converter module to read a JSONL file; the flow is now one-directional
(core -> families -> converters -> ... -> eval).
"""

"""Prompt rendering (basic, instruction, CoT; English and Chinese) and the ``prompts`` stage.

``prompts_cot.render``: RenderOptions, render_prompt, render_response, format_answer (docs/CONTRACT.md).
``prompts_cot.templates``: all wording as data, and template hashes.
``prompts_cot.stage``: STAGE ``prompts`` (records -> <variant>/<split>.jsonl within token budgets).
``record_fixtures``: hand-made records per motion class for tests.
"""

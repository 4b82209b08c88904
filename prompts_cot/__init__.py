"""Prompt templates (basic, instruction, CoT) in English and Chinese."""

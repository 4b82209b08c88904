"""The domain-expert labelling loop: select -> export -> (Label Studio | review) -> import -> merge -> agreement.

Stages (``python -m pipeline label <sub>``): ``select``, ``export``, ``import``, ``review``, ``merge``,
``agreement``; shared row schemas live in :mod:`pipeline.label.common`.
"""

"""JSON Schemas of the wire contract, generated from its pydantic models (`python -m scripts.schemas`).

video.py models the per-video document (the only message without a model of its own in the
code), files.py renders the schemas and compares them with the files under schemas/,
__main__.py writes or checks them.
"""

"""
Generated documentation: the blocks tools write into the markdown docs, and the model summary tables.

``markdown_blocks`` replaces one tool's block in a doc and nothing else; ``model_summary`` writes docs/model.md's
parameter, multiply-add and shape tables.
"""

"""The reliability tool's report writer: it replaces its own block in docs/benchmarks.md and nothing else.

The soak and fuzz themselves are benchmarks (minutes of a live node), run by hand; their results are in
docs/benchmarks.md ## Reliability with the command that produced them.
"""

from __future__ import annotations

from mesc3d_training.reliability import write_docs_block

OTHERS = '# Benchmarks\n\n## Node\n\n<!-- bench:node:start -->\nnode numbers\n<!-- bench:node:end -->\n'


def test_blocks_go_into_the_reliability_section_and_are_replaced_in_place(tmp_path):
    doc = tmp_path / 'benchmarks.md'
    doc.write_text(OTHERS + '\n## Reliability\n\n## Training\n\ntraining numbers\n')
    write_docs_block('fuzz', 'fuzz v1', doc)
    write_docs_block('soak', 'soak v1', doc)
    write_docs_block('fuzz', 'fuzz v2', doc)
    text = doc.read_text()
    assert text.startswith(OTHERS)  # other sections untouched
    assert text.count('## Reliability') == 1 and 'fuzz v1' not in text
    assert text.index('## Reliability') < text.index('fuzz v2') < text.index('soak v1') < text.index('## Training')
    assert text.rstrip().endswith('training numbers')


def test_the_section_is_appended_when_absent(tmp_path):
    doc = tmp_path / 'benchmarks.md'
    doc.write_text(OTHERS)
    write_docs_block('soak', 'soak v1', doc)
    text = doc.read_text()
    assert text.startswith(OTHERS) and text.index('## Reliability') < text.index('soak v1')


def test_a_missing_document_is_created(tmp_path):
    doc = tmp_path / 'benchmarks.md'
    write_docs_block('soak', 'soak only', doc)
    assert doc.read_text().startswith('# Benchmarks\n\n## Reliability\n') and 'soak only' in doc.read_text()

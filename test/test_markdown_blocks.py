"""mesc3d_training.reports.markdown_blocks: a tool rewrites its own generated block and nothing else in the doc."""

from mesc3d_training.reports.markdown_blocks import markers, replace_block


def test_replacing_a_block_keeps_the_prose_and_other_blocks(tmp_path):
    doc = tmp_path / 'benchmarks.md'
    a_start, a_end = markers('a')
    b_start, b_end = markers('b')
    doc.write_text(f'# B\n\n## A\n\nprose a\n{a_start}\nold a\n{a_end}\n\n## B\n\n{b_start}\nold b\n{b_end}\nafter\n')
    replace_block(doc, 'a', 'new a', 'A')
    assert doc.read_text() == (f'# B\n\n## A\n\nprose a\n{a_start}\nnew a\n{a_end}\n\n'
                               f'## B\n\n{b_start}\nold b\n{b_end}\nafter\n')


def test_a_missing_block_goes_at_the_end_of_its_section(tmp_path):
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# B\n\n## Reliability\n\nintro\n\n## Node\n\nnode text\n')
    replace_block(doc, 'reliability:soak', 'soak table', 'Reliability')
    start, end = markers('reliability:soak')
    assert doc.read_text() == f'# B\n\n## Reliability\n\nintro\n\n{start}\nsoak table\n{end}\n\n## Node\n\nnode text\n'


def test_a_missing_section_is_appended_and_a_missing_file_created(tmp_path):
    doc = tmp_path / 'docs' / 'new.md'
    replace_block(doc, 'x', 'body', 'X')
    start, end = markers('x')
    assert doc.read_text() == f'## X\n\n{start}\nbody\n{end}\n'
    replace_block(doc, 'y', 'other', 'Y')
    assert doc.read_text().endswith(f'{end}\n\n## Y\n\n{markers("y")[0]}\nother\n{markers("y")[1]}\n')
